"""A PLLaVA checkpoint folder as published (e.g. ermu2001/pllava-13b): what its config says, which weights it
holds, and whether those weights are exactly the ones a PLLaVA model has.

The published layout, read from magic-research/PLLaVA (models/pllava/configuration_pllava.py,
tasks/eval/model_utils.py, tasks/train/train_pllava_nframe_accel.py):

* ``config.json``: model_type ``llava`` (the architectures name the PLLaVA class), ``pooling_method``,
  ``pooling_shape`` [T, h, w], ``frame_shape`` [24, 24], ``num_frames``, ``use_pooling``,
  ``image_token_index`` (32000), ``vision_feature_layer`` (-2), ``vision_feature_select_strategy``
  ("default": drop CLS), ``projector_hidden_act`` ("gelu"), a Llama (vicuna) ``text_config`` and a CLIP
  ``vision_config``.
* ``model-0000N-of-0000M.safetensors`` + ``model.safetensors.index.json``: the state dict of the whole model
  *after* ``get_peft_model(language_model, LoraConfig(r=128, target_modules=[q_proj, v_proj]))``, so the
  language model's keys are PEFT-wrapped: ``language_model.base_model.model.model.layers.N.self_attn.
  q_proj.base_layer.weight`` (the base weight, peft >= 0.7; PLLaVA pins peft 0.10), ``...q_proj.lora_A.
  default.weight`` [r, in], ``...q_proj.lora_B.default.weight`` [out, r], and every other language weight
  under ``language_model.base_model.model.``. No adapter_config.json: alpha is given at load time.

Loading those keys into a plain LLaVA gives transformers' "newly initialized" warning and a random language
model (PLLaVA issue #81). Here the key sets must match exactly, or loading stops with one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcap.errors import UserError

#: architecture names a PLLaVA config.json may carry
ARCHITECTURES = frozenset({"MagicForConditionalGeneration", "PllavaForConditionalGeneration"})
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
LORA_A = re.compile(r"^(language_model\.base_model\.model\..+)\.lora_A\.default\.weight$")


def read_config(model: str | Path) -> dict[str, Any] | None:
    """config.json of a local checkpoint folder, or None (a hub id, a file, no config)."""
    path = Path(model) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the model config: {exc}") from None


def is_pllava_config(config: dict[str, Any] | None) -> bool:
    """A PLLaVA config: its architectures name the PLLaVA class, or model_type pllava, or a llava config with
    the pooling fields only PLLaVA has."""
    if not config:
        return False
    if ARCHITECTURES & set(config.get("architectures") or ()):
        return True
    if config.get("model_type") == "pllava":
        return True
    return config.get("model_type") == "llava" and "pooling_shape" in config and "frame_shape" in config


def is_pllava(model: str | Path) -> bool:
    """Whether `model` is a local PLLaVA checkpoint folder (for choosing the engine when none is named)."""
    return is_pllava_config(read_config(model))


def parse_shape(text: str | list[int] | tuple[int, ...], what: str = "--pooling-shape") -> tuple[int, int, int]:
    """'4-12-12' (Open-Sora's form) or [4, 12, 12] -> (4, 12, 12); every part a positive integer."""
    parts = text.split("-") if isinstance(text, str) else list(text)
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"{what} must be three positive integers T-H-W such as 4-12-12, got {text!r}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class PllavaCheckpoint:
    """The parts of a PLLaVA checkpoint the model is built from."""

    folder: Path
    config: dict[str, Any]
    weight_map: dict[str, str]  # key -> shard file name
    lora_targets: tuple[str, ...]  # module names carrying LoRA (q_proj, v_proj), empty when none
    lora_rank: int

    @classmethod
    def open(cls, model: str | Path) -> "PllavaCheckpoint":
        folder = Path(model)
        if not folder.is_dir():
            raise UserError(f"{model}: not a local checkpoint folder (the PLLaVA engine loads a downloaded "
                            "checkpoint, e.g. `huggingface-cli download ermu2001/pllava-13b --local-dir DIR`)")
        config = read_config(folder)
        if config is None:
            raise UserError(f"{folder}: no config.json")
        if not is_pllava_config(config):
            raise UserError(f"{folder}/config.json is not a PLLaVA config (architectures "
                            f"{config.get('architectures')}, no pooling_shape/frame_shape)")
        for part in ("text_config", "vision_config"):
            if not isinstance(config.get(part), dict):
                raise UserError(f"{folder}/config.json has no {part}")
        weight_map = _weight_map(folder)
        targets, rank = _lora_layout(folder, weight_map)
        return cls(folder=folder, config=config, weight_map=weight_map, lora_targets=targets, lora_rank=rank)

    @property
    def pooling_shape(self) -> tuple[int, int, int]:
        return parse_shape(self.config.get("pooling_shape") or [], f"{self.folder}/config.json pooling_shape")

    @property
    def frame_shape(self) -> tuple[int, int]:
        shape = self.config.get("frame_shape") or [24, 24]
        return int(shape[0]), int(shape[1])

    @property
    def image_token_index(self) -> int:
        return int(self.config.get("image_token_index", 32000))

    @property
    def vision_feature_layer(self) -> int:
        return int(self.config.get("vision_feature_layer", -2))

    @property
    def drops_cls(self) -> bool:
        strategy = self.config.get("vision_feature_select_strategy", "default")
        if strategy not in ("default", "full"):
            raise UserError(f"{self.folder}/config.json: unknown vision_feature_select_strategy {strategy!r}")
        return strategy == "default"

    @property
    def projector_act(self) -> str:
        return str(self.config.get("projector_hidden_act", "gelu"))

    @property
    def pad_token_id(self) -> int | None:
        value = self.config.get("pad_token_id", self.config["text_config"].get("pad_token_id"))
        return None if value is None else int(value)


def _weight_map(folder: Path) -> dict[str, str]:
    """key -> shard file, from the safetensors index (the published layout) or a single model.safetensors."""
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{index}: not a safetensors index ({exc})") from None
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise UserError(f"{folder}: shard {missing[0]} named by {INDEX} is missing "
                            f"({len(missing)} shard(s) missing; was the download complete?)")
        return dict(weight_map)
    single = folder / SINGLE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return {key: SINGLE for key in f.keys()}
    raise UserError(f"{folder}: no {INDEX} or {SINGLE}: PLLaVA weights are sharded safetensors with an index")


def _lora_layout(folder: Path, weight_map: dict[str, str]) -> tuple[tuple[str, ...], int]:
    """Which module names carry a LoRA, and its rank (the first dimension of lora_A)."""
    stems = [m.group(1) for key in weight_map if (m := LORA_A.match(key))]
    if not stems:  # every published PLLaVA carries its language LoRA inside the shards
        language = sorted(k for k in weight_map if k.startswith("language_model."))
        raise UserError(f"{folder}: the weights do not match a PLLaVA model: no LoRA weights "
                        f"(language_model.base_model.model.*.lora_A.default.weight); first language key: "
                        f"{language[0] if language else 'none'}; refusing to run a partly random model")
    targets = tuple(sorted({stem.rsplit(".", 1)[-1] for stem in stems}))
    from safetensors import safe_open

    key = f"{stems[0]}.lora_A.default.weight"
    with safe_open(str(folder / weight_map[key]), framework="pt") as f:
        rank = int(f.get_slice(key).get_shape()[0])
    return targets, rank


#: (published prefix, module prefix): transformers 5 dropped CLIPVisionModel's `vision_model` level (it renames
#: on its own from_pretrained path); the published checkpoints were saved with transformers 4.37, which had it
RENAMED_PREFIXES = (("vision_tower.vision_model.", "vision_tower."),)


def module_key(published: str, module_keys: set[str] | frozenset[str]) -> str:
    """The model's name for a published key (unchanged where the model has that very name)."""
    if published in module_keys:
        return published
    for old, new in RENAMED_PREFIXES:
        if published.startswith(old) and (renamed := new + published[len(old):]) in module_keys:
            return renamed
    return published


def published_key(module: str) -> str:
    """The published name of a model key (the tiny checkpoint is written under these)."""
    for old, new in RENAMED_PREFIXES:
        if module.startswith(new) and not module.startswith(old):
            return old + module[len(new):]
    return module


def describe_mismatch(folder: Path, missing: list[str], unexpected: list[str]) -> str:
    """One line naming the first missing and the first unexpected key, with the counts."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    return (f"{folder}: the weights do not match a PLLaVA model: {'; '.join(parts)}; refusing to run a partly "
            "random model (is this the PLLaVA checkpoint folder that holds the model-*.safetensors shards?)")
