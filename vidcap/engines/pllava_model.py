"""The PLLaVA model from transformers' parts: a CLIP vision tower, a two-layer projector followed by 3-D average
pooling, and a causal language model wrapped by peft's LoRA.

Transformers has no PLLaVA class, and its LlavaNextVideo pools *before* the projector, so PLLaVA's weights do
not fit it. The module tree here mirrors PLLaVA's (`vision_tower`, `multi_modal_projector.linear_1/linear_2`,
`language_model` = a PeftModelForCausalLM), so its state dict has exactly the published key names; the
loader relies on that and checks it.

Per video of T frames (after repetition to `num_frames`), following models/pllava/modeling_pllava.py:
  tower hidden_states[vision_feature_layer], CLS dropped      (videos*T, h*w, C_vis)
  linear_1 -> act -> linear_2                                 (videos*T, h*w, C)
  -> videos C T h w -> AdaptiveAvgPool3d(pooling_shape) -> videos (T' h' w') C
and the one image placeholder of each prompt stands for those T'*h'*w' positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN

from vidcap.engines.pllava_checkpoint import PllavaCheckpoint


class PllavaProjector(nn.Module):
    """linear_1 -> activation -> linear_2 on every frame token, then average pooling over (T, h, w)."""

    def __init__(self, vision_width: int, text_width: int, act: str, pooling_shape: tuple[int, int, int],
                 frame_shape: tuple[int, int]) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_width, text_width, bias=True)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_width, text_width, bias=True)
        self.pooling = nn.AdaptiveAvgPool3d(pooling_shape)
        self.frame_shape = frame_shape

    def forward(self, features: torch.Tensor, num_videos: int) -> torch.Tensor:
        """(videos*T, h*w, C_vis) -> (videos, T'*h'*w', C)."""
        x = self.linear_2(self.act(self.linear_1(features)))
        frames, _, width = x.shape
        h, w = self.frame_shape
        x = x.reshape(num_videos, frames // num_videos, h, w, width).permute(0, 4, 1, 2, 3)  # videos C T h w
        x = self.pooling(x)
        return x.flatten(2).transpose(1, 2)  # videos (T h w) C, time outermost as in einops' (T h w)


class PllavaModel(nn.Module):
    """Vision tower + projector + (LoRA-wrapped) language model; `generate` takes prompt ids with one image
    placeholder per row already expanded to the pooled token count."""

    def __init__(self, checkpoint: PllavaCheckpoint, *, pooling_shape: tuple[int, int, int], lora_alpha: float,
                 attn: str = "sdpa") -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        config = checkpoint.config
        vision_config = _sub_config(AutoConfig, config["vision_config"], "clip_vision_model")
        text_config = _sub_config(AutoConfig, config["text_config"], "llama")
        self.vision_tower = AutoModel.from_config(vision_config, attn_implementation=attn)
        self.multi_modal_projector = PllavaProjector(vision_config.hidden_size, text_config.hidden_size,
                                                     checkpoint.projector_act, pooling_shape,
                                                     checkpoint.frame_shape)
        language_model = AutoModelForCausalLM.from_config(text_config, attn_implementation=attn)
        self.lora_alpha = lora_alpha
        self.lora_rank = checkpoint.lora_rank
        if checkpoint.lora_targets:
            from peft import LoraConfig, TaskType, get_peft_model

            lora = LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=list(checkpoint.lora_targets),
                              r=checkpoint.lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0, inference_mode=True)
            language_model = get_peft_model(language_model, lora, autocast_adapter_dtype=False)
        self.language_model = language_model
        self.image_token_index = checkpoint.image_token_index
        self.feature_layer = checkpoint.vision_feature_layer
        self.drops_cls = checkpoint.drops_cls
        self.pooling_shape = pooling_shape
        self.frame_shape = checkpoint.frame_shape
        self.text_config = text_config
        self.checkpoint_frames = int(config.get("num_frames") or pooling_shape[0])  # when no task says
        self.is_noise = bool(config.get("vidcap_tiny_random", False))  # vidcap's tiny test checkpoints

    @property
    def tokens_per_video(self) -> int:
        t, h, w = self.pooling_shape
        return t * h * w

    @property
    def dtype(self) -> torch.dtype:
        return self.multi_modal_projector.linear_1.weight.dtype

    def video_features(self, pixel_values: torch.Tensor, num_videos: int) -> torch.Tensor:
        """(videos*T, 3, H, W) -> (videos, T'*h'*w', C): tower, projector, pooling."""
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        features = out.hidden_states[self.feature_layer]
        if self.drops_cls:
            features = features[:, 1:]
        h, w = self.frame_shape
        if features.shape[1] != h * w:
            raise ValueError(f"the vision tower gives {features.shape[1]} tokens per frame, frame_shape says {h}x{w}")
        return self.multi_modal_projector(features, num_videos)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, num_videos: int,
              pad_token_id: int) -> torch.Tensor:
        """Token embeddings with each row's placeholder positions replaced, in order, by its video's tokens."""
        placeholder = input_ids == self.image_token_index
        # the placeholder id may lie past the embedding table (PLLaVA embeds it as the pad token, then overwrites)
        embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(placeholder, pad_token_id))
        features = self.video_features(pixel_values, num_videos).to(embeds.dtype)
        counts = placeholder.sum(dim=1)
        if not bool((counts == features.shape[1]).all()):
            raise ValueError(f"placeholders per row {counts.tolist()} != {features.shape[1]} visual tokens per video")
        embeds[placeholder] = features.reshape(-1, features.shape[-1])
        return embeds

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                 num_videos: int, generation_config: Any, pad_token_id: int) -> Any:
        """Greedy generation from the merged embeddings; returns only new tokens (no prompt ids were given)."""
        embeds = self.embed(input_ids, pixel_values, num_videos, pad_token_id)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                            generation_config=generation_config)

    def merge_lora(self) -> None:
        """Fold the LoRA delta (alpha/r * B A) into the base weights and drop the adapter: what tensor
        parallelism shards, since AutoTP does not know peft's wrapper layers."""
        if hasattr(self.language_model, "merge_and_unload"):
            self.language_model = self.language_model.merge_and_unload()

    def base_language_model(self) -> nn.Module:
        """The causal LM inside peft's wrappers (or itself when there is no adapter)."""
        lm = self.language_model
        return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def _sub_config(auto_config: Any, part: dict[str, Any], default_type: str) -> Any:
    """A sub-config dict of config.json as its transformers config class (CLIP vision, Llama ...)."""
    part = dict(part)
    return auto_config.for_model(part.pop("model_type", default_type), **part)
