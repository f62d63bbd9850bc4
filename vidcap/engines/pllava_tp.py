"""One tensor-parallel rank of the PLLaVA engine: DeepSpeed AutoTP over the language model only.

Every rank loads the whole checkpoint on the CPU (same strict loader), folds the LoRA into the base weights
(AutoTP splits plain Linear layers and does not know peft's wrappers; the merged forward equals the adapter
forward, tested), and lets AutoTP shard the language model. The CLIP tower and the projector stay whole on
every rank: they are small beside a 13B language model, and each rank computes the same visual tokens from
the same broadcast frames. The rank's engine is an ordinary PllavaEngine, so the TP wrapper in
vidcap.parallel drives it like the HF engine.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from vidcap.engines.pllava import PllavaEngine, _shape
from vidcap.engines.pllava_settings import PllavaSettings
from vidcap.errors import UserError


def load_rank_engine(config: PllavaSettings, env: Any, device: torch.device, groups: Any) -> PllavaEngine:
    from vidcap.engines.hf_load import resolve_attn, resolve_dtype
    from vidcap.engines.pllava_load import load_pllava
    from vidcap.parallel.load import init_deepspeed

    if config.tp_backend != "deepspeed":
        raise UserError("PLLaVA's tensor parallelism is DeepSpeed AutoTP over the language model: use "
                        "--tp-backend deepspeed")
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("--tp-size > 1 with PLLaVA needs DeepSpeed: pip install deepspeed (DS_BUILD_OPS=0 on a "
                        "machine without CUDA)")
    import deepspeed

    init_deepspeed(env, device, groups)
    dtype = resolve_dtype(config.dtype, device)
    model = load_pllava(config.folder, pooling_shape=_shape(config), lora_alpha=config.lora_alpha,
                        device=torch.device("cpu"), dtype=dtype, attn=resolve_attn(config.attn, device) or "sdpa")
    model.merge_lora()
    sharded = deepspeed.init_inference(model.language_model, tensor_parallel={"tp_size": env.world_size},
                                       dtype=dtype, replace_with_kernel_inject=False)
    model.language_model = sharded.module
    return PllavaEngine(config).attach(model.to(device).eval(), device)
