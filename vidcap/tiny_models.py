"""Tiny random-weight vision-language models, built offline, for tests and the demo.

Each one is a real transformers checkpoint folder (config, safetensors weights, tokenizer, processor, chat
template) that loads through the same `from_pretrained` path as a hub model, so tests exercise the engine's
real code. The tokenizer is a byte-level BPE trained on the spot on a few caption-like sentences, so its
output is made of word pieces rather than raw bytes. The weights are random: the captions are noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

NOISE_WARNING = ("WARNING: this is a tiny RANDOM-WEIGHT model built by vidcap for tests and demos. "
                 "Its captions are random noise, not descriptions of anything.")

#: sentences the tiny tokenizer learns its word pieces from (our own, caption-like)
CORPUS = [
    "A red car drives along a wet road at night under orange street lamps.",
    "The camera pans slowly across a green valley with a river and small houses.",
    "A woman in a blue coat walks her dog through a quiet park in autumn.",
    "Close-up of hands kneading bread dough on a wooden table, soft window light.",
    "Aerial view of waves breaking on a sandy beach, bright and sunny.",
    "A cat sleeps on a windowsill while rain runs down the glass.",
    "Time-lapse of clouds moving over a city skyline at sunset, warm colours.",
    "Two children ride bicycles down a dirt path between tall trees.",
    "The video shows a chef slicing vegetables in a busy kitchen, handheld camera.",
    "A static shot of a snowy mountain road with a truck passing by.",
    "The image shows a bowl of fruit on a white table in a bright room.",
    "Style: cinematic, shallow depth of field, slow motion, natural colours.",
    "People dance at an outdoor concert while coloured lights sweep the crowd.",
    "A small boat crosses a calm lake in the early morning mist.",
]

FAMILIES = ("llava", "llava-next", "llava-next-video", "qwen2-vl", "qwen2.5-vl", "pllava")
#: families written in a layout of their own (not transformers' save_pretrained): "module:function"
_WRITERS = {"pllava": "vidcap.tiny_pllava:make_tiny_pllava"}

IMAGE_PX = 32  # vision input side
PATCH_PX = 8  # vision patch side
VOCAB_SIZE = 512  # at most: the corpus runs out of merges a little before
UNK = "<unk>"
CONTEXT = 4096  # as LLaVA-1.5, so prompt-length checks mean what they mean on the real model

# Chat templates in the layout of each real family: visual placeholders and text in message order.
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'video' %}<video>\n"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_MISTRAL_TEMPLATE = (
    "{% for message in messages %}[INST] "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
    " [/INST]{% endfor %}"
)
_QWEN_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class _Tokens:
    """Special tokens of one family: what the tokenizer needs and how the config refers to them."""

    pad: str
    eos: str
    bos: str | None
    image: str
    video: str | None = None
    other: tuple[str, ...] = ()

    def all(self) -> list[str]:
        names = [self.pad, self.bos, self.eos, self.image, self.video, *self.other]
        return list(dict.fromkeys(t for t in names if t))


_LLAVA_TOKENS = _Tokens(pad="<pad>", eos="</s>", bos="<s>", image="<image>")
_LLAVA_VIDEO_TOKENS = _Tokens(pad="<pad>", eos="</s>", bos="<s>", image="<image>", video="<video>")
_QWEN_TOKENS = _Tokens(pad="<|endoftext|>", eos="<|im_end|>", bos=None, image="<|image_pad|>",
                       video="<|video_pad|>", other=("<|im_start|>", "<|vision_start|>", "<|vision_end|>"))


def train_tokenizer(tokens: _Tokens) -> Any:
    """A byte-level BPE whose base alphabet is printable ASCII and newline, with word pieces learned from
    CORPUS, padding on the left. Other bytes encode as `<unk>`, so a random model's output stays readable-ish
    (word pieces, no stray control bytes) while every prompt still encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = [byte_level.pre_tokenize_str(chr(b))[0][0] for b in [0x0A, *range(0x20, 0x7F)]]
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = byte_level
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[UNK, *tokens.all()],
                                  initial_alphabet=alphabet, show_progress=False)
    core.train_from_iterator(CORPUS, trainer)
    extra = {"image_token": tokens.image}
    if tokens.video:
        extra["video_token"] = tokens.video
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNK, pad_token=tokens.pad, eos_token=tokens.eos, bos_token=tokens.bos,
        padding_side="left", extra_special_tokens=extra, model_max_length=CONTEXT,
    )


def _llama_text(width: int, tokenizer: Any) -> dict[str, Any]:
    return {
        "model_type": "llama", "hidden_size": width, "intermediate_size": 2 * width,
        "num_hidden_layers": 2, "num_attention_heads": width // 16, "num_key_value_heads": width // 16,
        "vocab_size": len(tokenizer), "max_position_embeddings": CONTEXT,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _clip_vision(width: int) -> dict[str, Any]:
    vision = width // 2
    return {
        "model_type": "clip_vision_model", "hidden_size": vision, "intermediate_size": 2 * vision,
        "num_hidden_layers": 2, "num_attention_heads": vision // 16, "image_size": IMAGE_PX,
        "patch_size": PATCH_PX, "projection_dim": vision,
    }


def _clip_settings() -> dict[str, Any]:
    return {"size": {"shortest_edge": IMAGE_PX}, "crop_size": {"height": IMAGE_PX, "width": IMAGE_PX}}


def _llava_kwargs() -> dict[str, Any]:
    """Processor settings shared by the LLaVA family: CLIP drops its class token ("default")."""
    return {"patch_size": PATCH_PX, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}


_PINPOINTS = [[IMAGE_PX, 2 * IMAGE_PX], [2 * IMAGE_PX, IMAGE_PX], [2 * IMAGE_PX, 2 * IMAGE_PX]]


def _build_llava(width: int) -> tuple[Any, Any]:
    from transformers import (LlavaConfig, LlavaForConditionalGeneration, LlavaImageProcessorPil,
                              LlavaProcessor)

    tokenizer = train_tokenizer(_LLAVA_TOKENS)
    config = LlavaConfig(vision_config=_clip_vision(width), text_config=_llama_text(width, tokenizer),
                         image_token_index=tokenizer.image_token_id,
                         image_seq_length=(IMAGE_PX // PATCH_PX) ** 2)
    processor = LlavaProcessor(image_processor=LlavaImageProcessorPil(**_clip_settings()), tokenizer=tokenizer,
                               chat_template=_LLAVA_TEMPLATE, **_llava_kwargs())
    return LlavaForConditionalGeneration(config), processor


def _build_llava_next(width: int) -> tuple[Any, Any]:
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    tokenizer = train_tokenizer(_LLAVA_TOKENS)
    config = LlavaNextConfig(vision_config=_clip_vision(width), text_config=_llama_text(width, tokenizer),
                             image_token_index=tokenizer.image_token_id, image_grid_pinpoints=_PINPOINTS,
                             image_seq_length=(IMAGE_PX // PATCH_PX) ** 2)
    image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=_PINPOINTS, **_clip_settings())
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   chat_template=_MISTRAL_TEMPLATE, **_llava_kwargs())
    return LlavaNextForConditionalGeneration(config), processor


def _build_llava_next_video(width: int) -> tuple[Any, Any]:
    from transformers import (LlavaNextImageProcessorPil, LlavaNextVideoConfig,
                              LlavaNextVideoForConditionalGeneration, LlavaNextVideoProcessor)

    from vidcap.engines.hf_video import ClipFramesVideoProcessor, accepting_stand_in

    tokenizer = train_tokenizer(_LLAVA_VIDEO_TOKENS)
    config = LlavaNextVideoConfig(
        vision_config=_clip_vision(width), text_config=_llama_text(width, tokenizer),
        image_token_index=tokenizer.image_token_id, video_token_index=tokenizer.video_token_id,
        image_grid_pinpoints=_PINPOINTS, image_seq_length=(IMAGE_PX // PATCH_PX) ** 2,
        video_seq_length=(IMAGE_PX // PATCH_PX) ** 2 // 4,
    )
    video_config = {"video_processor_type": "LlavaNextVideoVideoProcessor", **_clip_settings()}
    processor = accepting_stand_in(LlavaNextVideoProcessor)(
        video_processor=ClipFramesVideoProcessor.from_video_config(video_config),
        image_processor=LlavaNextImageProcessorPil(image_grid_pinpoints=_PINPOINTS, **_clip_settings()),
        tokenizer=tokenizer, chat_template=_LLAVA_TEMPLATE, **_llava_kwargs(),
    )
    return LlavaNextVideoForConditionalGeneration(config), processor


def _qwen_vision(width: int, version: str) -> dict[str, Any]:
    """Vision tower half as wide as the language model; Qwen2.5-VL adds windowed attention (one window
    layer, one full layer)."""
    vision = width // 2
    common = {"depth": 2, "num_heads": vision // 16, "patch_size": PATCH_PX, "spatial_merge_size": 2,
              "temporal_patch_size": 2}
    if version == "2":
        return {**common, "embed_dim": vision, "hidden_size": width, "mlp_ratio": 2}
    return {**common, "hidden_size": vision, "out_hidden_size": width, "intermediate_size": 2 * vision,
            "window_size": 2 * PATCH_PX * 2, "fullatt_block_indexes": [1]}


def _build_qwen(width: int, version: str) -> tuple[Any, Any]:
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from vidcap.engines.hf_video import QwenFramesVideoProcessor, accepting_stand_in

    prefix = "Qwen2VL" if version == "2" else "Qwen2_5_VL"
    tokenizer = train_tokenizer(_QWEN_TOKENS)
    text = {
        "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2,
        "num_attention_heads": width // 16, "num_key_value_heads": width // 16,
        "vocab_size": len(tokenizer), "max_position_embeddings": CONTEXT,
        # multimodal RoPE splits the 8 rotary frequencies of a 16-wide head into time, height and width
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        # as in the real checkpoints, <|endoftext|> is both bos and pad
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text, vision_config=_qwen_vision(width, version),
        image_token_id=tokenizer.image_token_id, video_token_id=tokenizer.video_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    factor = PATCH_PX * 2  # a merged 2x2 block of patches is one visual token
    settings = {"patch_size": PATCH_PX, "merge_size": 2, "temporal_patch_size": 2,
                "size": {"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2}}
    video_config = {"video_processor_type": "Qwen2VLVideoProcessor", **settings}
    processor_class = "Qwen2VLProcessor" if version == "2" else "Qwen2_5_VLProcessor"
    processor = accepting_stand_in(getattr(transformers, processor_class))(
        image_processor=Qwen2VLImageProcessorPil(**settings), tokenizer=tokenizer,
        video_processor=QwenFramesVideoProcessor.from_video_config(video_config), chat_template=_QWEN_TEMPLATE,
    )
    return getattr(transformers, f"{prefix}ForConditionalGeneration")(config), processor


_BUILDERS: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "llava": _build_llava,
    "llava-next": _build_llava_next,
    "llava-next-video": _build_llava_next_video,
    "qwen2-vl": lambda width: _build_qwen(width, "2"),
    "qwen2.5-vl": lambda width: _build_qwen(width, "2.5"),
}


def make_tiny_model(dir: str | Path, family: str = "llava", width: int = 64, seed: int = 0) -> Path:
    """Build and save a random-weight `family` model `width` wide in `dir`; return the folder.

    `width` is the language model's hidden size (a multiple of 32; the vision tower is half as wide):
    64 is enough for most tests, 128 lets tensor parallelism really shard.
    """
    import torch

    if family not in _BUILDERS and family not in _WRITERS:
        raise ValueError(f"unknown tiny model family {family!r} (choose from {', '.join(FAMILIES)})")
    if width < 32 or width % 32:
        raise ValueError(f"width must be a positive multiple of 32, got {width}")
    if family in _WRITERS:
        import importlib

        module, function = _WRITERS[family].split(":")
        return getattr(importlib.import_module(module), function)(dir, width=width, seed=seed)
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, processor = _BUILDERS[family](width)
    model.config.vidcap_tiny_random = True  # the engine warns and reports it
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(f"# vidcap tiny {family} model (width {width}, seed {seed})\n\n{NOISE_WARNING}\n")
    return out
