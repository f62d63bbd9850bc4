"""The Hugging Face engine: any image-text-to-text checkpoint, greedy decoding, one caption per sample.

Loading (`hf_load`), input building (`hf_inputs`) and decoding (here) are separate, so a tensor-parallel
wrapper can load the model its own way and reuse the rest: every rank builds the same inputs and calls the
same `generate` in lockstep. torch and transformers are imported only when the engine opens or runs, so the
class itself (its settings, needs and preflight) is cheap to reach from the CLI and `vidcap status`.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
from typing import Any, Sequence

from typing import TYPE_CHECKING

import numpy as np

from vidcap.engines.base import FRAMES, Engine, Needs, Result, Sample
from vidcap.engines.hf_settings import HFSettings
from vidcap.errors import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: frame size (height, width) assumed by the start-up context check where the visual token count depends on
#: it (LLaVA-NeXT tiles, Qwen2-VL's dynamic resolution): a 16:9 frame at the default resize (short side 336).
#: Frames that turn out bigger are still caught, sample by sample, before generation.
REFERENCE_FRAME_HW = (336, 597)


class HFEngine(Engine):
    """Captions batches with a transformers model and its processor."""

    name = "hf"
    accepts = frozenset({FRAMES})
    Settings = HFSettings

    def __init__(self, settings: HFSettings | None = None) -> None:
        super().__init__(settings)
        self.config = self.settings
        self.model: Any = None
        self.processor: Any = None

    @classmethod
    def needs(cls, settings: HFSettings) -> Needs:
        return Needs(ranks=max(1, settings.tp_size), gpus_per_rank=0 if settings.device == "cpu" else 1)

    @classmethod
    def preflight(cls, settings: HFSettings, spec: Any = None) -> None:
        """Before a run is frozen: a model is named; a local one exists and its processor loads; the task's
        prompt, with its frames and the answer budget, fits the model's context (read from its config; no
        weights are loaded). A hub model is checked by the tasks at start (the hub may be out of reach here)."""
        if not settings.model:
            raise UserError("no model given: pass a hub id or a local checkpoint folder")
        if not settings.is_local:
            return
        folder = os.path.expanduser(settings.model)
        if not os.path.isdir(folder):
            raise UserError(f"--model {settings.model}: no such folder (a local checkpoint must exist here; "
                            f"a hub id looks like org/name)")
        if spec is None or spec.frames_per_sample == 0:
            return
        from transformers import AutoConfig

        from vidcap.engines.hf_load import load_processor

        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise UserError(f"--model {settings.model}: not a model folder ({str(exc).strip().splitlines()[0]})") \
                from None
        engine = cls(settings)
        engine.processor = load_processor(folder)
        engine.context = _context_length(config, engine.processor)
        engine.check_prompt(spec.prompt, spec.frames_per_sample, spec.is_video)

    def open(self, spec: Any = None) -> None:
        """Load the model and processor (once), then check the task's prompt fits the context."""
        if self.model is None:
            self.preflight(self.settings)
            from vidcap.engines.hf_load import load_model, load_processor

            processor = load_processor(self.settings.model)
            self.attach(load_model(self.settings), processor)
        if spec is not None:
            self.check_prompt(spec.prompt, spec.frames_per_sample, spec.is_video)

    def attach(self, model: Any, processor: Any, device: torch.device | None = None) -> "HFEngine":
        """Serve with a model loaded elsewhere (a tensor-parallel rank loads its shard of it its own way)."""
        import torch

        self.model = model
        self.processor = processor
        self.device = torch.device(device) if device is not None else model.device
        self.dtype = model.dtype
        self.context = _context_length(model.config, processor)
        self.generation = _greedy(model, processor, self.settings.max_new_tokens)
        self.eos_ids = set(np.atleast_1d(self.generation.eos_token_id).tolist()) \
            if self.generation.eos_token_id is not None else set()
        self.is_noise = bool(getattr(model.config, "vidcap_tiny_random", False))
        if self.is_noise:
            log.warning("%s is a tiny RANDOM-WEIGHT model: its captions are noise", self.settings.model)
        return self

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        """Generate for the whole batch; a sample whose input would overflow the context gets an error."""
        if not samples:
            return []
        import torch

        from vidcap.engines.hf_inputs import build_inputs

        inputs = build_inputs(self.processor, samples)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        overflow = {i for i, n in enumerate(lengths) if self._overflows(n)}
        if overflow:
            fits = [s for i, s in enumerate(samples) if i not in overflow]
            answers = iter(self.run(fits))
            return [Result(prompt_tokens=n, error=self._overflow_message(n)) if i in overflow else next(answers)
                    for i, n in enumerate(lengths)]
        inputs = inputs.to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=self.generation)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._decode(tokens, prompt_tokens) for tokens, prompt_tokens in zip(new_tokens, lengths)]

    def check_prompt(self, prompt: str, num_frames: int, is_video: bool) -> None:
        """Refuse at start a prompt that, with the visual tokens of `num_frames` reference frames and the
        answer budget, does not fit the model's context (an overflowing prompt gives empty captions)."""
        if self.context is None:
            return
        from vidcap.engines.hf_inputs import build_inputs, visual_token_count

        frame = np.zeros((*REFERENCE_FRAME_HW, 3), dtype=np.uint8)
        sample = Sample(key="check", frames=[frame] * max(1, num_frames), prompt=prompt, is_video=is_video)
        input_ids = build_inputs(self.processor, [sample])["input_ids"]
        total = int(input_ids.shape[1])
        if self._overflows(total):
            visual = visual_token_count(self.processor, input_ids)
            raise UserError(
                f"the prompt is too long for {self.config.model}: {total - visual} prompt tokens + {visual} visual "
                f"tokens ({max(1, num_frames)} frame(s) of {REFERENCE_FRAME_HW[1]}x{REFERENCE_FRAME_HW[0]}) + "
                f"{self.config.max_new_tokens} new tokens = {total + self.config.max_new_tokens} > context "
                f"{self.context}; shorten the prompt, use fewer frames or lower --max-new-tokens")

    def figures(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "model": self.config.model,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "attn": getattr(self.model.config, "_attn_implementation", None),
            "context": self.context,
        }
        if self.is_noise:
            stats["random_weights"] = True
        if self.device.type == "cuda":
            import torch

            stats["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        return stats

    def close(self) -> None:
        loaded = self.model is not None
        self.model = None
        self.processor = None
        gc.collect()
        if loaded and self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _overflows(self, prompt_tokens: int) -> bool:
        return self.context is not None and prompt_tokens + self.config.max_new_tokens > self.context

    def _overflow_message(self, prompt_tokens: int) -> str:
        return (f"input of {prompt_tokens} tokens + {self.config.max_new_tokens} new tokens exceeds the "
                f"model's context of {self.context}")

    def _decode(self, tokens: list[int], prompt_tokens: int) -> Result:
        """Keep the answer up to its first end-of-sequence token; drop special tokens and outer whitespace."""
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_ids), len(tokens))
        text = self.processor.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()
        finish = "stop" if end < len(tokens) or (tokens and tokens[end - 1] in self.eos_ids) \
            or len(tokens) < self.settings.max_new_tokens else "length"
        return Result(text=text, prompt_tokens=prompt_tokens, generated_tokens=end, finish_reason=finish)


def _context_length(config: Any, processor: Any) -> int | None:
    """The language model's context, from its config (the tokenizer's limit is often a placeholder)."""
    context = getattr(config.get_text_config(), "max_position_embeddings", None)
    if context is None:
        limit = getattr(processor.tokenizer, "model_max_length", None)
        context = limit if isinstance(limit, int) and limit < 10**7 else None
    return context


def _greedy(model: Any, processor: Any, max_new_tokens: int) -> Any:
    """The checkpoint's generation config made greedy (captions must be reproducible) with our length."""
    generation = copy.deepcopy(model.generation_config)
    generation.do_sample = False
    generation.num_beams = 1
    generation.temperature = generation.top_p = generation.top_k = None
    generation.max_new_tokens = max_new_tokens
    if generation.pad_token_id is None:
        generation.pad_token_id = processor.tokenizer.pad_token_id
    if generation.eos_token_id is None:
        generation.eos_token_id = processor.tokenizer.eos_token_id
    return generation
