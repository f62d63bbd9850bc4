"""The Hugging Face text engine: a causal chat LM answers each text sample (tags from a caption, say).

A thin `Engine` around `hf_chat.ChatGenerator` (chat template, left padding, greedy decoding): the worker
hands it text samples whose `prompt` the task built from the row's text; out-of-memory halving is the
worker's (`engines.batching.run_batch`), as for every engine. `--engine hf` of `vidcap tag` is this engine.
With `--tp-size N` each of the N ranks holds a shard of the model through the same DeepSpeed AutoTP or
transformers `tp_plan` paths as the VLM engine (vidcap.parallel.load), and `attach` takes it.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Sequence

from vidcap.engines.base import TEXT, Engine, Needs, Result, Sample
from vidcap.engines.model_settings import common_problems
from vidcap.errors import UserError
from vidcap.settings import operational

DEFAULT_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"


@dataclass(frozen=True)
class HFTextSettings:
    model: str = DEFAULT_MODEL  # hub id or local checkpoint folder of a chat (instruct) model
    max_new_tokens: int = 128  # a tag list is short; an answer cut here is usually unparsable
    dtype: str | None = None  # bf16, fp16, fp32; default bf16 on CUDA, fp32 on CPU
    attn: str | None = operational(None)
    device: str | None = operational(None)
    tp_size: int = operational(1)
    tp_backend: str = operational("deepspeed")  # or transformers

    def __post_init__(self) -> None:
        problems = common_problems(self)
        if problems:
            raise UserError("; ".join(problems))


class HFTextEngine(Engine):
    name = "hf-text"
    accepts = frozenset({TEXT})
    Settings = HFTextSettings

    def __init__(self, settings: HFTextSettings | None = None) -> None:
        super().__init__(settings)
        self.generator: Any = None

    @classmethod
    def needs(cls, settings: HFTextSettings) -> Needs:
        return Needs(ranks=max(1, settings.tp_size), gpus_per_rank=0 if settings.device == "cpu" else 1)

    @classmethod
    def preflight(cls, settings: HFTextSettings, spec: Any = None) -> None:
        if not settings.model:
            raise UserError("no model given: pass a hub id or a local checkpoint folder of a chat model")

    def open(self, spec: Any = None) -> None:
        """Load the model and tokenizer once; refuse a prompt that leaves no room for the answer."""
        if self.generator is None:
            from vidcap.engines.hf_chat import ChatGenerator, load_chat_model, load_chat_tokenizer

            self.preflight(self.settings)
            s = self.settings
            tokenizer = load_chat_tokenizer(s.model)  # first: a model without a chat template is refused unloaded
            self.attach(load_chat_model(s.model, device=s.device, dtype=s.dtype, attn=s.attn), tokenizer)
        prompt = getattr(spec, "prompt", "") if spec is not None else ""
        if prompt:
            self.generator.check_fits(prompt)

    def attach(self, model: Any, tokenizer: Any, device: Any = None) -> "HFTextEngine":
        """Serve with a model loaded elsewhere (a tensor-parallel rank loads its shard its own way)."""
        from vidcap.engines.hf_chat import ChatGenerator

        self.generator = ChatGenerator(model, tokenizer, self.settings.max_new_tokens, device=device,
                                       name=self.settings.model)
        return self

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        if not samples:
            return []
        if self.generator is None:
            self.open()
        answers = self.generator.generate([s.prompt or s.text or "" for s in samples])
        return [Result(text=a.text, prompt_tokens=a.prompt_tokens, generated_tokens=a.generated_tokens,
                       error=a.error, finish_reason=a.finish_reason) for a in answers]

    def figures(self) -> dict[str, Any]:
        return self.generator.figures() if self.generator is not None else {"model": self.settings.model}

    def close(self) -> None:
        if self.generator is None:
            return
        cuda = self.generator.device.type == "cuda"
        self.generator = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()
