"""Loading a Hugging Face vision-language model: device, dtype and attention choices, model, processor.

Loading the weights is one function, `load_model(config)`, kept apart from input preparation and decoding,
so a tensor-parallel wrapper (DeepSpeed AutoTP, transformers' `tp_plan`) can load the model its own way and
hand it to the same engine.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch
import transformers
from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor,
                          AutoTokenizer)

from vidcap.engines.hf_settings import HFSettings
from vidcap.engines.hf_video import STAND_INS, accepting_stand_in
from vidcap.engines.model_settings import ATTN_CHOICES
from vidcap.errors import UserError

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
    "fp32": torch.float32, "float32": torch.float32,
}


def resolve_device(name: str | None) -> torch.device:
    """The device asked for, else the first GPU when there is one, else the CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """bf16 on a GPU that has it (fp16 on older ones), fp32 on CPU where half precision is slow."""
    if name:
        try:
            return DTYPES[name.lower()]
        except KeyError:
            raise UserError(f"unknown --dtype {name!r} (choose from bf16, fp16, fp32)") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_attn(name: str | None, device: torch.device) -> str | None:
    """Check the attention kernel asked for; None lets transformers pick (sdpa where it can)."""
    if name is None:
        return None
    if name not in ATTN_CHOICES:
        raise UserError(f"unknown --attn {name!r} (choose from {', '.join(ATTN_CHOICES)})")
    if name == "flash_attention_2":
        if device.type != "cuda":
            raise UserError("--attn flash_attention_2 needs a CUDA GPU; use --attn sdpa on this device")
        if importlib.util.find_spec("flash_attn") is None:
            raise UserError("--attn flash_attention_2 needs the flash-attn package (pip install flash-attn); "
                            "or use --attn sdpa")
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_model(config: HFSettings) -> torch.nn.Module:
    """Load `config.model` (hub id or local folder) on its device, in eval mode."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    attn = resolve_attn(config.attn, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    # with accelerate the weights load straight onto the device; without it they go through CPU memory
    direct = importlib.util.find_spec("accelerate") is not None
    if direct:
        kwargs["device_map"] = str(device)
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        model = AutoModelForImageTextToText.from_pretrained(config.model, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {config.model!r} as an image-text-to-text model: "
                        f"{_first_line(exc)}") from exc
    return (model if direct else model.to(device)).eval()


def load_processor(model: str) -> Any:
    """The checkpoint's processor, with left padding; without torchvision, a stand-in video processor.

    Only the video processors of known families have a stand-in; any other checkpoint whose processor needs
    torchvision gets a clear error instead of an import traceback.
    """
    try:
        processor = AutoProcessor.from_pretrained(model)
    except ImportError as exc:
        if "torchvision" not in str(exc).lower():
            raise
        processor = _processor_without_torchvision(model, exc)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the processor of {model!r}: {_first_line(exc)}") from exc
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise UserError(f"{model!r} has no image processor: it is not an image-text-to-text checkpoint")
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def _processor_without_torchvision(model: str, exc: ImportError) -> Any:
    """Build the checkpoint's processor class by hand, its video processor replaced by a stand-in."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.video_processing_utils import VideoProcessorMixin

    model_type = AutoConfig.from_pretrained(model).model_type
    class_name = PROCESSOR_MAPPING_NAMES.get(model_type)
    stand_in = STAND_INS.get(class_name or "")
    if stand_in is None:
        raise UserError(f"the processor of {model!r} ({class_name or model_type}) needs torchvision, which is "
                        "not importable here: install the torchvision build that matches your torch") from exc
    log.warning("torchvision is not importable: %s frames go through vidcap's PIL stand-in for the "
                "checkpoint's video processor", class_name)
    processor_class = accepting_stand_in(getattr(transformers, class_name))
    processor_dict, kwargs = processor_class.get_processor_dict(model)
    video_config, _ = VideoProcessorMixin.get_video_processor_dict(model)
    parts = {
        "tokenizer": AutoTokenizer.from_pretrained(model),
        "image_processor": AutoImageProcessor.from_pretrained(model),
        "video_processor": stand_in.from_video_config(video_config),
    }
    args = [parts[name] for name in processor_class.get_attributes()]
    return processor_class.from_args_and_dict(args, processor_dict, **kwargs)
