"""The PLLaVA engine: pooled video LLaVA with a LoRA'd language model (Open-Sora 1.2's captioner), loading the
published checkpoints unchanged (`pllava_load`), greedy decoding, one caption per sample.

Settings (frozen in the run config, EngineConfig): `pooling_shape` (None: the checkpoint's; Open-Sora used
4-12-12 with 4 frames), `lora_alpha` (default 4, as Open-Sora and PLLaVA's eval; training used 32; the scale
is alpha / r), `frame_fit` (crop: CLIP's centre crop, faithful; pad: letterbox, the whole frame), and the
shared ones: num_frames, max_new_tokens, dtype, attn (sdpa by default; flash_attention_2 checked at start),
device.
"""

from __future__ import annotations

import gc
import logging
from typing import Any, Sequence

import torch

from vidcap.engines import EngineConfig
from vidcap.engines.base import Caption, Engine, Sample
from vidcap.engines.pllava_inputs import FRAME_FITS, QUERY, build_batch, prompt_ids, render_prompt
from vidcap.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_LORA_ALPHA = 4.0
ANSWER_TAG = "ASSISTANT:"


class PllavaEngine(Engine):
    """Captions batches of videos with a loaded `PllavaModel`, its tokenizer and CLIP image processor."""

    name = "pllava"

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, config: EngineConfig,
                 device: torch.device) -> None:
        if config.frame_fit not in FRAME_FITS:
            raise UserError(f"unknown --frame-fit {config.frame_fit!r} (choose from {', '.join(FRAME_FITS)})")
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.config = config
        self.device = device
        self.num_frames = config.num_frames
        self.image_token_id = model.image_token_index
        token = tokenizer.convert_tokens_to_ids("<image>")
        if token != self.image_token_id:
            raise UserError(f"{config.model}: the tokenizer's <image> token is {token}, config.json's "
                            f"image_token_index is {self.image_token_id}")
        self.pad_token_id = _pad_id(tokenizer, model)
        self.context = getattr(model.text_config, "max_position_embeddings", None)
        self.generation = _greedy(tokenizer, self.pad_token_id, config.max_new_tokens)
        self.eos_ids = {int(tokenizer.eos_token_id)}
        self.is_noise = bool(getattr(model, "is_noise", False))

    @classmethod
    def from_config(cls, config: EngineConfig) -> "PllavaEngine":
        from vidcap.engines.hf_load import resolve_attn, resolve_device, resolve_dtype
        from vidcap.engines.pllava_load import load_pllava

        if not config.model:
            raise UserError("no model given: pass a local PLLaVA checkpoint folder with --model")
        device = resolve_device(config.device)
        model = load_pllava(config.model, pooling_shape=_shape(config), lora_alpha=config.lora_alpha,
                            device=device, dtype=resolve_dtype(config.dtype, device),
                            attn=resolve_attn(config.attn, device) or "sdpa")
        return cls.with_model(model, config, device)

    @classmethod
    def with_model(cls, model: Any, config: EngineConfig, device: torch.device) -> "PllavaEngine":
        """The engine over an already loaded (or tensor-parallel) model; loads the tokenizer and processor."""
        tokenizer, image_processor = load_processing(config.model)
        engine = cls(model, tokenizer, image_processor, config, device)
        if engine.is_noise:
            log.warning("%s is a tiny RANDOM-WEIGHT model: its captions are noise", config.model)
        return engine

    def caption(self, samples: Sequence[Sample]) -> list[Caption]:
        if not samples:
            return []
        refused = {i: self._refusal(s) for i, s in enumerate(samples)}
        refused = {i: c for i, c in refused.items() if c is not None}
        if refused:
            answers = iter(self.caption([s for i, s in enumerate(samples) if i not in refused]))
            return [refused[i] if i in refused else next(answers) for i in range(len(samples))]
        batch = build_batch(samples, self.tokenizer, self.image_processor, num_frames=self.num_frames,
                            image_token_id=self.image_token_id, visual_tokens=self.model.tokens_per_video,
                            pad_token_id=self.pad_token_id, frame_fit=self.config.frame_fit)
        output = self.model.generate(batch.input_ids.to(self.device), batch.attention_mask.to(self.device),
                                     batch.pixel_values.to(self.device, dtype=self.model.dtype), len(samples),
                                     self.generation, self.pad_token_id)
        sequences = output.sequences if hasattr(output, "sequences") else output
        return [self._decode(row, n) for row, n in zip(sequences.tolist(), batch.prompt_tokens)]

    def check_prompt(self, prompt: str, num_frames: int, is_video: bool) -> None:
        """Refuse at start a prompt with its own <image> token, or one that with the pooled video tokens and
        the answer budget does not fit the language model's context."""
        try:
            total = len(prompt_ids(self.tokenizer, render_prompt(prompt, QUERY[is_video]), self.image_token_id,
                                   self.model.tokens_per_video))
        except ValueError as exc:
            raise UserError(f"{self.config.model}: {exc}") from None
        if self._overflows(total):
            visual = self.model.tokens_per_video
            raise UserError(f"the prompt is too long for {self.config.model}: {total - visual} prompt tokens + "
                            f"{visual} video tokens (pooling {'-'.join(map(str, self.model.pooling_shape))}) + "
                            f"{self.config.max_new_tokens} new tokens > context {self.context}; shorten the "
                            "prompt, pool more or lower --max-new-tokens")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "model": self.config.model, "device": str(self.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "pooling_shape": list(self.model.pooling_shape), "visual_tokens_per_video": self.model.tokens_per_video,
            "lora_alpha": self.model.lora_alpha, "lora_rank": self.model.lora_rank,
            "frame_fit": self.config.frame_fit, "context": self.context,
        }
        if self.is_noise:
            stats["random_weights"] = True
        if self.device.type == "cuda":
            stats["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        return stats

    def close(self) -> None:
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _refusal(self, sample: Sample) -> Caption | None:
        """An error caption for a sample that cannot go in (a prompt holding <image>, too long a prompt)."""
        try:
            n = len(prompt_ids(self.tokenizer, render_prompt(sample.prompt, QUERY[sample.is_video]),
                               self.image_token_id, self.model.tokens_per_video))
        except ValueError as exc:
            return Caption(error=str(exc))
        if self._overflows(n):
            return Caption(prompt_tokens=n, error=f"input of {n} tokens + {self.config.max_new_tokens} new "
                                                  f"tokens exceeds the model's context of {self.context}")
        return None

    def _overflows(self, prompt_tokens: int) -> bool:
        return self.context is not None and prompt_tokens + self.config.max_new_tokens > self.context

    def _decode(self, tokens: list[int], prompt_tokens: int) -> Caption:
        """The answer up to the first end-of-sequence token; as Open-Sora, what follows the last ASSISTANT:
        and newlines as spaces."""
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_ids), len(tokens))
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
        text = text.split(ANSWER_TAG)[-1].strip().replace("\n", " ")
        return Caption(text=text, prompt_tokens=prompt_tokens, generated_tokens=end)


def load_processing(model: str) -> tuple[Any, Any]:
    """The checkpoint's tokenizer and its CLIP image processor (the PIL one: no torchvision needed)."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        image_processor = CLIPImageProcessorPil.from_pretrained(model)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the tokenizer / image processor of {model}: {first}") from exc
    return tokenizer, image_processor


def _shape(config: EngineConfig) -> tuple[int, int, int] | None:
    from vidcap.engines.pllava_checkpoint import parse_shape

    return parse_shape(config.pooling_shape) if config.pooling_shape else None


def _pad_id(tokenizer: Any, model: Any) -> int:
    for value in (tokenizer.pad_token_id, getattr(model.text_config, "pad_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    raise UserError("the PLLaVA tokenizer has no pad or eos token")


def _greedy(tokenizer: Any, pad_token_id: int, max_new_tokens: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                            pad_token_id=pad_token_id, eos_token_id=tokenizer.eos_token_id)
