"""Settings of the Hugging Face engine, apart from the engine so the CLI can build them without torch.

They check themselves when built (one UserError listing every problem), so a typo is refused before a run
is frozen; whether a local model folder exists is the engine's `preflight`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidcap.errors import UserError
from vidcap.settings import operational

DTYPE_CHOICES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")
ATTN_CHOICES = ("flash_attention_2", "sdpa", "eager")
TP_BACKENDS = ("deepspeed", "transformers")


@dataclass(frozen=True)
class HFSettings:
    model: str = ""  # hub id or local checkpoint folder
    max_new_tokens: int = 256
    dtype: str | None = None  # bf16, fp16, fp32; default bf16 on CUDA, fp32 on CPU
    attn: str | None = operational(None)  # attention implementation
    device: str | None = operational(None)  # cuda, cpu; default cuda when present
    tp_size: int = operational(1)  # tensor-parallel ranks per shard task
    tp_backend: str = operational("deepspeed")

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.dtype is not None and self.dtype.lower() not in DTYPE_CHOICES:
            problems.append(f"unknown --dtype {self.dtype!r} (choose from bf16, fp16, fp32)")
        if self.attn is not None and self.attn not in ATTN_CHOICES:
            problems.append(f"unknown --attn {self.attn!r} (choose from {', '.join(ATTN_CHOICES)})")
        if self.tp_size < 1:
            problems.append(f"--tp-size must be at least 1, got {self.tp_size}")
        if self.tp_backend not in TP_BACKENDS:
            problems.append(f"unknown --tp-backend {self.tp_backend!r} (choose from {', '.join(TP_BACKENDS)})")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def is_local(self) -> bool:
        """A folder on disk rather than a hub id: a hub id is `name` or `org/name`, never more."""
        model = self.model
        return (os.path.isabs(model) or model.startswith(("./", "../", "~")) or model.count("/") > 1
                or os.path.isdir(os.path.expanduser(model)))
