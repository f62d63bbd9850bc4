"""Settings of the PLLaVA engine, apart from the engine so the CLI builds and checks them without torch.

`lora_alpha` defaults to 4 (Open-Sora and PLLaVA's eval; training used 32) and is frozen into the run config
with the pooling shape, so a run's captions say which scale and how many video tokens made them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidcap.engines.model_settings import common_problems
from vidcap.errors import UserError
from vidcap.settings import operational

FRAME_FITS = ("crop", "pad")


@dataclass(frozen=True)
class PllavaSettings:
    model: str = ""  # local folder of a PLLaVA checkpoint (config.json + sharded safetensors + index)
    max_new_tokens: int = 256
    pooling_shape: list[int] | None = None  # [T, h, w]; None: the checkpoint's (resolved at the CLI)
    lora_alpha: float = 4.0  # LoRA scale = alpha / rank
    frame_fit: str = "crop"  # crop: CLIP's centre square (faithful); pad: letterboxed whole frame
    dtype: str | None = None  # bf16, fp16, fp32; default bf16 on CUDA, fp32 on CPU
    attn: str | None = operational(None)  # sdpa when None; flash_attention_2 checked at start
    device: str | None = operational(None)
    tp_size: int = operational(1)  # DeepSpeed AutoTP ranks over the language model
    tp_backend: str = operational("deepspeed")

    def __post_init__(self) -> None:
        problems = common_problems(self, tp_backends=None)
        if self.lora_alpha < 0:
            problems.append(f"--lora-alpha must be 0 or more, got {self.lora_alpha}")
        if self.frame_fit not in FRAME_FITS:
            problems.append(f"unknown --frame-fit {self.frame_fit!r} (choose from {', '.join(FRAME_FITS)})")
        if self.pooling_shape is not None and (len(self.pooling_shape) != 3 or min(self.pooling_shape) < 1):
            problems.append(f"--pooling-shape must be three positive integers T-H-W, got {self.pooling_shape}")
        if self.tp_backend != "deepspeed":
            problems.append("PLLaVA's tensor parallelism is DeepSpeed AutoTP over the language model: "
                            "--tp-backend deepspeed")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def folder(self) -> str:
        return os.path.expanduser(self.model)
