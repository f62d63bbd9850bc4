"""Settings of the Hugging Face engine, apart from the engine so the CLI can build them without torch.

They check themselves when built (one UserError listing every problem), so a typo is refused before a run
is frozen; whether a local model folder exists is the engine's `preflight`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidcap.engines.model_settings import common_problems
from vidcap.errors import UserError
from vidcap.settings import operational


@dataclass(frozen=True)
class HFSettings:
    model: str = ""  # hub id or local checkpoint folder
    max_new_tokens: int = 256
    dtype: str | None = None  # bf16, fp16, fp32; default bf16 on CUDA, fp32 on CPU
    attn: str | None = operational(None)  # attention implementation
    device: str | None = operational(None)  # cuda, cpu; default cuda when present
    tp_size: int = operational(1)  # tensor-parallel ranks per shard task
    tp_backend: str = operational("deepspeed")
    ds_kernel_inject: bool = operational(False)  # DeepSpeed's fused kernels for the language model (CUDA, TP)
    # a row's retry (a caption flagged with --on-flag retry, an error) generates with this repetition penalty
    # (transformers' repetition_penalty, e.g. 1.2): greedy decoding would only write the same loop again.
    # First attempts are untouched, so it may be set when a run is resumed.
    retry_repetition_penalty: float | None = operational(None)

    def __post_init__(self) -> None:
        problems = common_problems(self)
        if self.retry_repetition_penalty is not None and self.retry_repetition_penalty <= 0:
            problems.append(f"--retry-repetition-penalty must be positive, got {self.retry_repetition_penalty}")
        if self.ds_kernel_inject and (self.tp_size < 2 or self.tp_backend != "deepspeed"):
            problems.append("--ds-kernel-inject applies to tensor-parallel runs through DeepSpeed "
                            "(--tp-size 2 or more, --tp-backend deepspeed)")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def is_local(self) -> bool:
        """A folder on disk rather than a hub id: a hub id is `name` or `org/name`, never more."""
        model = self.model
        return (os.path.isabs(model) or model.startswith(("./", "../", "~")) or model.count("/") > 1
                or os.path.isdir(os.path.expanduser(model)))
