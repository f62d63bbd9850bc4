"""The checks every local-model engine's settings share (HF VLM, PLLaVA, HF text), in one place and torch-free.

Each Settings dataclass calls `common_problems` from `__post_init__` and adds its own, so a typo in any of
them reads the same and is refused before a run is frozen.
"""

from __future__ import annotations

from typing import Any, Sequence

DTYPE_CHOICES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")
ATTN_CHOICES = ("flash_attention_2", "sdpa", "eager")
TP_BACKENDS = ("deepspeed", "transformers")


def common_problems(settings: Any, tp_backends: Sequence[str] | None = TP_BACKENDS) -> list[str]:
    """What is wrong with `max_new_tokens`, `dtype`, `attn`, `tp_size` and `tp_backend` (unless `tp_backends`
    is None: the engine says why its backends differ), one phrase each."""
    problems = []
    if settings.max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be at least 1, got {settings.max_new_tokens}")
    if settings.dtype is not None and settings.dtype.lower() not in DTYPE_CHOICES:
        problems.append(f"unknown --dtype {settings.dtype!r} (choose from bf16, fp16, fp32)")
    if settings.attn is not None and settings.attn not in ATTN_CHOICES:
        problems.append(f"unknown --attn {settings.attn!r} (choose from {', '.join(ATTN_CHOICES)})")
    if settings.tp_size < 1:
        problems.append(f"--tp-size must be at least 1, got {settings.tp_size}")
    if tp_backends is not None and settings.tp_backend not in tp_backends:
        problems.append(f"unknown --tp-backend {settings.tp_backend!r} (choose from {', '.join(tp_backends)})")
    return problems
