"""Loading a published PLLaVA checkpoint unchanged: build the model without memory, check its keys and shapes
against the checkpoint's, then fill it shard by shard straight onto the device.

Every weight of the model must come from the checkpoint and every weight of the checkpoint must have a place
in the model; otherwise loading stops with one line naming the first missing and the first unexpected key
(never a half-random model, PLLaVA issue #81; nor a model directory mixed up with a weight directory, #22:
here they are one folder). One tolerance: a LoRA-wrapped base weight stored under its pre-peft-0.7 name
(`q_proj.weight` beside `q_proj.lora_A.default.weight`) is taken as `q_proj.base_layer.weight`, which is
unambiguous. And transformers 5 names the CLIP tower's weights without the `vision_model.` level the
published (transformers 4.37) keys have: `pllava_checkpoint.RENAMED_PREFIXES`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from vidcap.engines.pllava_checkpoint import PllavaCheckpoint, describe_mismatch, module_key
from vidcap.engines.pllava_model import PllavaModel
from vidcap.errors import UserError


def build_empty(checkpoint: PllavaCheckpoint, *, pooling_shape: tuple[int, int, int], lora_alpha: float,
                attn: str = "sdpa") -> PllavaModel:
    """The model with its parameters on the meta device (no memory, no random init); buffers are real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return PllavaModel(checkpoint, pooling_shape=pooling_shape, lora_alpha=lora_alpha, attn=attn)


def checkpoint_keys(checkpoint: PllavaCheckpoint, expected: set[str]) -> dict[str, str]:
    """model key -> checkpoint key, after the renames; raises UserError when the sets differ."""
    mapping: dict[str, str] = {}
    for key in checkpoint.weight_map:
        target = module_key(key, expected)
        if target not in expected and key.endswith(".weight"):
            wrapped = key[: -len(".weight")] + ".base_layer.weight"
            if wrapped in expected:
                target = wrapped
        mapping[target] = key
    missing = sorted(expected - set(mapping))
    unexpected = sorted(mapping[k] for k in set(mapping) - expected)
    if missing or unexpected:
        raise UserError(describe_mismatch(checkpoint.folder, missing, unexpected))
    return mapping


def load_weights(model: PllavaModel, checkpoint: PllavaCheckpoint, device: torch.device,
                 dtype: torch.dtype) -> PllavaModel:
    """Fill the empty `model` from the checkpoint's shards (shapes checked first), cast to `dtype`."""
    from safetensors import safe_open

    expected = {k: v.shape for k, v in model.state_dict().items()}
    mapping = checkpoint_keys(checkpoint, set(expected))
    by_shard: dict[str, list[str]] = defaultdict(list)
    for target, key in mapping.items():
        by_shard[checkpoint.weight_map[key]].append(target)
    where = "cpu" if device.type == "cpu" else str(device)
    for shard in sorted(by_shard):
        with safe_open(str(checkpoint.folder / shard), framework="pt", device=where) as f:
            for target in by_shard[shard]:
                shape = tuple(f.get_slice(mapping[target]).get_shape())
                if shape != tuple(expected[target]):
                    raise UserError(f"{checkpoint.folder}/{shard}: {mapping[target]} has shape {list(shape)}, "
                                    f"the model built from config.json needs {list(expected[target])}")
            tensors = {t: _cast(f.get_tensor(mapping[t]), dtype) for t in by_shard[shard]}
        model.load_state_dict(tensors, strict=False, assign=True)
        del tensors
    left = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if left:  # cannot happen when the key sets matched; a guard against a model with unsaved parameters
        raise UserError(f"{checkpoint.folder}: parameter {left[0]} got no weight from the checkpoint")
    return model.to(device).eval()


def load_pllava(folder: str | Path, *, pooling_shape: tuple[int, int, int] | None, lora_alpha: float,
                device: torch.device, dtype: torch.dtype, attn: str = "sdpa") -> PllavaModel:
    """Open, check and load the checkpoint in `folder`; pooling shape None means the checkpoint's."""
    checkpoint = PllavaCheckpoint.open(folder)
    shape = pooling_shape or checkpoint.pooling_shape
    model = build_empty(checkpoint, pooling_shape=shape, lora_alpha=lora_alpha, attn=attn)
    return load_weights(model, checkpoint, device, dtype)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor
