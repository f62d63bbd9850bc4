"""A tiny random-weight PLLaVA checkpoint in exactly the published layout, built offline.

Same files and names as ermu2001/pllava-*: config.json (model_type llava, architectures
MagicForConditionalGeneration, pooling/frame fields, a Llama text_config and a CLIP vision_config),
model-0000N-of-0000M.safetensors shards with model.safetensors.index.json, the language model's LoRA (q_proj and
v_proj) stored inside the shards under PEFT-wrapped key names, no adapter files; plus a tokenizer with an
`<image>` token and a CLIP preprocessor config. It loads through the engine's one loading path. The weights are
random (the LoRA's B too, so the adapter changes the output): its captions are noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHARDS = 2
LORA_RANK = 8
LORA_TARGETS = ("q_proj", "v_proj")
NUM_FRAMES = 4


def tiny_pllava_config(width: int, tokenizer: Any) -> dict[str, Any]:
    """config.json of the tiny checkpoint, with the published file's fields."""
    from vidcap.tiny_models import IMAGE_PX, PATCH_PX, _clip_vision, _llama_text

    side = IMAGE_PX // PATCH_PX
    return {
        "architectures": ["MagicForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "pooling_method": "avg",
        "pooling_shape": [NUM_FRAMES, side // 2, side // 2],
        "frame_shape": [side, side],
        "num_frames": NUM_FRAMES,
        "use_pooling": True,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "torch_dtype": "float32",
        "text_config": {**_llama_text(width, tokenizer), "tie_word_embeddings": False},
        "vision_config": _clip_vision(width),
        "vidcap_tiny_random": True,
    }


def make_tiny_pllava(dir: str | Path, width: int = 64, seed: int = 0) -> Path:
    """Write the tiny checkpoint to `dir`; return the folder."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessorPil

    from vidcap.engines.pllava_checkpoint import INDEX, PllavaCheckpoint, published_key
    from vidcap.engines.pllava_model import PllavaModel
    from vidcap.tiny_models import _LLAVA_TOKENS, NOISE_WARNING, _clip_settings, train_tokenizer

    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(_LLAVA_TOKENS)
    config = tiny_pllava_config(width, tokenizer)
    layout = PllavaCheckpoint(folder=out, config=config, weight_map={}, lora_targets=LORA_TARGETS,
                              lora_rank=LORA_RANK)
    model = PllavaModel(layout, pooling_shape=tuple(config["pooling_shape"]), lora_alpha=4.0, attn="sdpa")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:  # peft starts B at zero; a tiny model's adapter must do something
                param.normal_(0.0, 0.2)
    state = {published_key(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    keys = sorted(state)
    per_shard = -(-len(keys) // SHARDS)
    weight_map: dict[str, str] = {}
    for i in range(SHARDS):
        name = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        part = {k: state[k] for k in keys[i * per_shard:(i + 1) * per_shard]}
        save_file(part, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(out)
    CLIPImageProcessorPil(**_clip_settings()).save_pretrained(out)
    (out / "README.md").write_text(f"# vidcap tiny PLLaVA checkpoint (width {width}, seed {seed})\n\n{NOISE_WARNING}\n")
    return out
