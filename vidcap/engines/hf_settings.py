"""Settings of the Hugging Face engine, apart from the engine so the CLI can build them without torch."""

from __future__ import annotations

from dataclasses import dataclass

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
