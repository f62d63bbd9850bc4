"""The PLLaVA engine: pooled video LLaVA with a LoRA'd language model (Open-Sora 1.2's captioner), loading the
published checkpoints unchanged (`pllava_load`), greedy decoding, one caption per sample.

Settings (`PllavaSettings`, frozen in the run config): `pooling_shape` (Open-Sora used 4-12-12 with 4 frames;
the CLI fills in the checkpoint's when not given), `lora_alpha` (default 4, as Open-Sora and PLLaVA's eval;
training used 32; the scale is alpha / r), `frame_fit` (crop: CLIP's centre crop, faithful; pad: letterbox,
the whole frame), max_new_tokens, dtype, attn (sdpa by default; flash_attention_2 checked at start), device,
tp_size (DeepSpeed AutoTP over the language model, `pllava_tp`). The frames per video come from the task.
torch is imported only when the engine opens, so the class is cheap for the CLI.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any, Sequence

from vidcap.engines.base import FRAMES, Engine, Needs, Result, Sample
from vidcap.engines.pllava_settings import PllavaSettings
from vidcap.errors import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ANSWER_TAG = "ASSISTANT:"


class PllavaEngine(Engine):
    """Captions batches of videos with a loaded `PllavaModel`, its tokenizer and CLIP image processor."""

    name = "pllava"
    accepts = frozenset({FRAMES})
    Settings = PllavaSettings

    def __init__(self, settings: PllavaSettings | None = None) -> None:
        super().__init__(settings)
        self.config = self.settings
        self.model: Any = None

    @classmethod
    def needs(cls, settings: PllavaSettings) -> Needs:
        return Needs(ranks=max(1, settings.tp_size), gpus_per_rank=0 if settings.device == "cpu" else 1)

    @classmethod
    def preflight(cls, settings: PllavaSettings, spec: Any = None) -> None:
        """Before a run is frozen, without torch or weights: the folder is a PLLaVA checkpoint whose shards are
        all there and whose LoRA sits inside them; the prompt fits the context with the pooled video tokens."""
        from vidcap.engines.pllava_checkpoint import PllavaCheckpoint
        from vidcap.engines.pllava_inputs import QUERY, prompt_ids, render_prompt

        if not settings.model:
            raise UserError("no model given: pass a local PLLaVA checkpoint folder with --model")
        checkpoint = PllavaCheckpoint.open(settings.folder)
        if spec is None or spec.frames_per_sample == 0:
            return
        t, h, w = settings.pooling_shape or checkpoint.pooling_shape
        tokenizer, _ = load_processing(settings.folder)
        try:
            total = len(prompt_ids(tokenizer, render_prompt(spec.prompt, QUERY[spec.is_video]),
                                   checkpoint.image_token_index, t * h * w))
        except ValueError as exc:
            raise UserError(f"{settings.model}: {exc}") from None
        context = checkpoint.config["text_config"].get("max_position_embeddings")
        _check_fits(settings, total, t * h * w, (t, h, w), context)

    def open(self, spec: Any = None) -> None:
        """Load the checkpoint (strictly), the tokenizer and the image processor; check the task's prompt."""
        if self.model is None:
            from vidcap.engines.hf_load import resolve_attn, resolve_device, resolve_dtype
            from vidcap.engines.pllava_load import load_pllava

            self.preflight(self.settings)
            device = resolve_device(self.settings.device)
            model = load_pllava(self.settings.folder, pooling_shape=_shape(self.settings),
                                lora_alpha=self.settings.lora_alpha, device=device,
                                dtype=resolve_dtype(self.settings.dtype, device),
                                attn=resolve_attn(self.settings.attn, device) or "sdpa")
            self.attach(model, device)
        if spec is not None:
            if spec.frames_per_sample:
                self.num_frames = spec.frames_per_sample
            self.check_prompt(spec.prompt, self.num_frames, spec.is_video)

    def attach(self, model: Any, device: "torch.device") -> "PllavaEngine":
        """Serve with a model loaded here or elsewhere (a tensor-parallel rank shards its language model)."""
        self.tokenizer, self.image_processor = load_processing(self.settings.folder)
        self.model = model
        self.device = device
        self.num_frames = int(model.checkpoint_frames)
        self.image_token_id = model.image_token_index
        token = self.tokenizer.convert_tokens_to_ids("<image>")
        if token != self.image_token_id:
            raise UserError(f"{self.settings.model}: the tokenizer's <image> token is {token}, config.json's "
                            f"image_token_index is {self.image_token_id}")
        self.pad_token_id = _pad_id(self.tokenizer, model)
        self.context = getattr(model.text_config, "max_position_embeddings", None)
        self.generation = _greedy(self.tokenizer, self.pad_token_id, self.settings.max_new_tokens)
        self.eos_ids = {int(self.tokenizer.eos_token_id)}
        self.is_noise = bool(getattr(model, "is_noise", False))
        if self.is_noise:
            log.warning("%s is a tiny RANDOM-WEIGHT model: its captions are noise", self.settings.model)
        return self

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        if not samples:
            return []
        refused = {i: self._refusal(s) for i, s in enumerate(samples)}
        refused = {i: c for i, c in refused.items() if c is not None}
        if refused:
            answers = iter(self.run([s for i, s in enumerate(samples) if i not in refused]))
            return [refused[i] if i in refused else next(answers) for i in range(len(samples))]
        from vidcap.engines.pllava_inputs import build_batch

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
        from vidcap.engines.pllava_inputs import QUERY, prompt_ids, render_prompt

        try:
            total = len(prompt_ids(self.tokenizer, render_prompt(prompt, QUERY[is_video]), self.image_token_id,
                                   self.model.tokens_per_video))
        except ValueError as exc:
            raise UserError(f"{self.config.model}: {exc}") from None
        _check_fits(self.settings, total, self.model.tokens_per_video, self.model.pooling_shape, self.context)

    def figures(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "model": self.config.model, "device": str(self.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "pooling_shape": list(self.model.pooling_shape), "visual_tokens_per_video": self.model.tokens_per_video,
            "lora_alpha": self.model.lora_alpha, "lora_rank": self.model.lora_rank,
            "frame_fit": self.config.frame_fit, "context": self.context,
        }
        if self.is_noise:
            stats["random_weights"] = True
        import torch

        if self.device.type == "cuda":
            stats["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        return stats

    def close(self) -> None:
        if self.model is None:
            return
        self.model = None
        gc.collect()
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _refusal(self, sample: Sample) -> Result | None:
        """An error result for a sample that cannot go in (a prompt holding <image>, too long a prompt)."""
        from vidcap.engines.pllava_inputs import QUERY, prompt_ids, render_prompt

        try:
            n = len(prompt_ids(self.tokenizer, render_prompt(sample.prompt, QUERY[sample.is_video]),
                               self.image_token_id, self.model.tokens_per_video))
        except ValueError as exc:
            return Result(error=str(exc))
        if self._overflows(n):
            return Result(prompt_tokens=n, error=f"input of {n} tokens + {self.config.max_new_tokens} new "
                                                  f"tokens exceeds the model's context of {self.context}")
        return None

    def _overflows(self, prompt_tokens: int) -> bool:
        return self.context is not None and prompt_tokens + self.config.max_new_tokens > self.context

    def _decode(self, tokens: list[int], prompt_tokens: int) -> Result:
        """The answer up to the first end-of-sequence token; as Open-Sora, what follows the last ASSISTANT:
        and newlines as spaces."""
        stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        end = len(tokens) if stop is None else stop + 1
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
        text = text.split(ANSWER_TAG)[-1].strip().replace("\n", " ")
        return Result(text=text, prompt_tokens=prompt_tokens, generated_tokens=end,
                      finish_reason="length" if stop is None else "stop")


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


def _shape(settings: PllavaSettings) -> tuple[int, int, int] | None:
    from vidcap.engines.pllava_checkpoint import parse_shape

    return parse_shape(settings.pooling_shape) if settings.pooling_shape else None


def _check_fits(settings: PllavaSettings, total: int, visual: int, shape: Any, context: int | None) -> None:
    if context is not None and total + settings.max_new_tokens > context:
        raise UserError(f"the prompt is too long for {settings.model}: {total - visual} prompt tokens + {visual} "
                        f"video tokens (pooling {'-'.join(map(str, shape))}) + {settings.max_new_tokens} new "
                        f"tokens > context {context}; shorten the prompt, pool more or lower --max-new-tokens")


def _pad_id(tokenizer: Any, model: Any) -> int:
    for value in (tokenizer.pad_token_id, getattr(model.text_config, "pad_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    raise UserError("the PLLaVA tokenizer has no pad or eos token")


def _greedy(tokenizer: Any, pad_token_id: int, max_new_tokens: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                            pad_token_id=pad_token_id, eos_token_id=tokenizer.eos_token_id)
