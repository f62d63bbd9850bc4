"""The PLLaVA engine on a tiny random checkpoint written in the published layout, loaded by the same code path
a downloaded ermu2001/pllava-* checkpoint takes: layout, pooled token counts, LoRA scale, strict keys,
batching, frame fit, and `vidcap caption` end to end with a broken video mid-batch."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pllava_helpers import fixed_batch, frames, greedy
from tie_aware import TIE_GAP, compare
from vidcap.cli import main
from vidcap.engines.base import Sample
from vidcap.engines.pllava import PllavaEngine
from vidcap.engines.pllava_settings import PllavaSettings
from vidcap.engines.pllava_inputs import build_batch, letterbox, repeat_frames
from vidcap.errors import UserError
from vidcap.fixtures.tiny_models import make_tiny_model
from worker_helpers import make_clips

torch.set_num_threads(1)

MAX_NEW = 12
LORA = "language_model.base_model.model.model.layers.{}.self_attn.{}.{}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("pllava") / "tiny-pllava", family="pllava")


def engine(model: Path, **settings: object) -> PllavaEngine:
    """Opened without a task: its frames per video are the checkpoint's num_frames (4 for the tiny one)."""
    return PllavaEngine.loaded(PllavaSettings(model=str(model), max_new_tokens=MAX_NEW, device="cpu", **settings))


def index(model: Path) -> dict[str, str]:
    return json.loads((model / "model.safetensors.index.json").read_text())["weight_map"]


def tensors(model: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index(model).values())):
        out.update(load_file(str(model / shard)))
    return out


# ------------------------------------------------------------------------------------------------ layout
def test_tiny_checkpoint_has_the_published_layout(tiny: Path) -> None:
    """Config fields, two shards + index and no adapter files, and the key names of the published checkpoint
    (PEFT-wrapped language model, base weight under base_layer, CLIP under vision_model), spelled out here
    rather than derived from the model code."""
    config = json.loads((tiny / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["MagicForConditionalGeneration"]
    for field in ("pooling_method", "pooling_shape", "frame_shape", "num_frames", "use_pooling", "text_config",
                  "vision_config", "image_token_index"):
        assert field in config, field
    assert config["text_config"]["model_type"] == "llama" and config["vision_config"]["model_type"] == "clip_vision_model"
    files = sorted(p.name for p in tiny.iterdir())
    assert "model-00001-of-00002.safetensors" in files and "model-00002-of-00002.safetensors" in files
    assert "model.safetensors.index.json" in files and not any("adapter" in f for f in files)
    keys = set(index(tiny))
    for layer in (0, 1):
        for proj in ("q_proj", "v_proj"):
            for part in ("base_layer.weight", "lora_A.default.weight", "lora_B.default.weight"):
                assert LORA.format(layer, proj, part) in keys
        assert LORA.format(layer, "k_proj", "weight") in keys and LORA.format(layer, "k_proj", "lora_A.default.weight") not in keys
    for key in ("language_model.base_model.model.lm_head.weight", "language_model.base_model.model.model.embed_tokens.weight",
                "multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.bias",
                "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
                "vision_tower.vision_model.post_layernorm.weight"):
        assert key in keys, key
    assert not any(k.startswith("language_model.model.") for k in keys)
    a = tensors(tiny)[LORA.format(0, "q_proj", "lora_A.default.weight")]
    assert a.shape[0] == 8  # rank


def test_loads_every_weight_from_the_checkpoint(tiny: Path) -> None:
    """Every parameter of the loaded model is the checkpoint's tensor (no random leftovers)."""
    from vidcap.engines.pllava_checkpoint import published_key

    e = engine(tiny)
    stored = tensors(tiny)
    state = e.model.state_dict()
    assert len(state) == len(stored)
    for name, value in state.items():
        assert torch.equal(value, stored[published_key(name)]), name
    assert e.stats()["lora_alpha"] == 4.0 and e.stats()["lora_rank"] == 8


# ------------------------------------------------------------------------------------------- pooled tokens
@pytest.mark.parametrize("shape", [(4, 2, 2), (1, 1, 1), (2, 4, 4), (3, 2, 1), (4, 4, 4), (8, 3, 3)])
def test_visual_tokens_per_video_are_t_h_w(tiny: Path, shape: tuple[int, int, int]) -> None:
    """Each video becomes T*h*w tokens for every frame count (fewer frames repeated up to num_frames), its
    prompt holds that many placeholders, and generation runs."""
    e = engine(tiny, pooling_shape=list(shape))
    t, h, w = shape
    samples = [Sample(f"n{n}", frames(n, 40, 56, n), "Describe.") for n in (1, 2, 3, 4)]
    batch = build_batch(samples, e.tokenizer, e.image_processor, num_frames=4, image_token_id=e.image_token_id,
                        visual_tokens=e.model.tokens_per_video, pad_token_id=e.pad_token_id, frame_fit="crop")
    assert batch.pixel_values.shape[0] == 4 * len(samples)
    assert ((batch.input_ids == e.image_token_id).sum(dim=1) == t * h * w).all()
    with torch.inference_mode():
        features = e.model.video_features(batch.pixel_values, len(samples))
    assert tuple(features.shape) == (len(samples), t * h * w, e.model.text_config.hidden_size)
    assert all(c.ok for c in e.caption(samples[:2]))


def test_pooling_comes_after_the_projector(tiny: Path) -> None:
    """Full-size pooling (4 frames of 4x4) returns the projected frame tokens in (T h w) order; 1-1-1 pooling
    is their mean: so the pooling averages projector outputs, not tower features."""
    full, mean = engine(tiny, pooling_shape=[4, 4, 4]), engine(tiny, pooling_shape=[1, 1, 1])
    pixels = build_batch([Sample("x", frames(4, 32, 32, 5), "p")], full.tokenizer, full.image_processor,
                         num_frames=4, image_token_id=full.image_token_id, visual_tokens=64,
                         pad_token_id=full.pad_token_id, frame_fit="crop").pixel_values
    with torch.inference_mode():
        tower = full.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        projected = full.model.multi_modal_projector.linear_2(
            full.model.multi_modal_projector.act(full.model.multi_modal_projector.linear_1(tower)))
        got_full = full.model.video_features(pixels, 1)[0]
        got_mean = mean.model.video_features(pixels, 1)[0]
    torch.testing.assert_close(got_full, projected.reshape(64, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(got_mean[0], projected.reshape(64, -1).mean(0), rtol=0, atol=1e-6)


def test_fewer_frames_are_repeated_as_pllava_does() -> None:
    """repeat_interleave(num_frames // n + 1)[:num_frames], as PLLaVA's projector and training collate."""
    names = lambda n, k: [int(f[0, 0, 0]) for f in repeat_frames([np.full((2, 2, 3), i, np.uint8) for i in range(n)], k)]  # noqa: E731
    assert names(3, 4) == [0, 0, 1, 1]
    assert names(2, 4) == [0, 0, 0, 1]
    assert names(1, 4) == [0, 0, 0, 0]
    assert names(4, 4) == [0, 1, 2, 3]
    assert names(3, 8) == [0, 0, 0, 1, 1, 1, 2, 2]


# ---------------------------------------------------------------------------------------------------- LoRA
def _q_proj(e: PllavaEngine) -> torch.nn.Module:
    return e.model.base_language_model().model.layers[0].self_attn.q_proj


@pytest.mark.parametrize("alpha", [4.0, 16.0])
def test_lora_delta_is_scaled_by_alpha_over_rank(tiny: Path, alpha: float) -> None:
    e = engine(tiny, lora_alpha=alpha)
    stored = tensors(tiny)
    w = stored[LORA.format(0, "q_proj", "base_layer.weight")]
    a, b = stored[LORA.format(0, "q_proj", "lora_A.default.weight")], stored[LORA.format(0, "q_proj", "lora_B.default.weight")]
    x = torch.randn(3, 5, w.shape[1])
    with torch.inference_mode():
        got = _q_proj(e)(x)
    torch.testing.assert_close(got, x @ w.T + (alpha / a.shape[0]) * (x @ a.T @ b.T), rtol=1e-5, atol=1e-5)


def _logits(lm: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return lm(input_ids=ids).logits


def test_alpha_zero_is_the_base_model_and_merged_equals_adapter(tiny: Path) -> None:
    """Alpha 0 gives the logits of a plain Llama holding the base weights; alpha 4 does not; the LoRA merged
    into the weights gives the adapter's logits."""
    from transformers import AutoConfig, LlamaForCausalLM

    text = dict(json.loads((tiny / "config.json").read_text())["text_config"])
    base = LlamaForCausalLM(AutoConfig.for_model(text.pop("model_type"), **text)).eval()
    prefix = "language_model.base_model.model."
    weights = {k[len(prefix):].replace(".base_layer.", "."): v for k, v in tensors(tiny).items()
               if k.startswith(prefix) and ".lora_" not in k}
    base.load_state_dict(weights, strict=True)
    ids = torch.tensor([[1, 5, 9, 30, 44, 12, 7]])
    zero, four = engine(tiny, lora_alpha=0.0), engine(tiny, lora_alpha=4.0)
    torch.testing.assert_close(_logits(zero.model.language_model, ids), _logits(base, ids), rtol=0, atol=1e-5)
    assert float((_logits(four.model.language_model, ids) - _logits(base, ids)).abs().max()) > 1e-2
    merged = copy.deepcopy(four.model)
    merged.merge_lora()
    assert not hasattr(merged.language_model, "peft_config")
    torch.testing.assert_close(_logits(merged.language_model, ids), _logits(four.model.language_model, ids),
                               rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad weights
def _copy(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    return dest


def _rewrite(model: Path, change, shard: str = "model-00001-of-00002.safetensors") -> None:  # noqa: ANN001
    """Rewrite one shard through change(dict) -> dict, and the index to match."""
    data = change(load_file(str(model / shard)))
    save_file(data, str(model / shard), metadata={"format": "pt"})
    weight_map = {k: v for k, v in index(model).items() if v != shard}
    weight_map.update(dict.fromkeys(data, shard))
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_renamed_or_misshapen_weights_are_refused_in_one_line(tiny: Path, tmp_path: Path) -> None:
    renamed = _copy(tiny, tmp_path / "renamed")
    key = LORA.format(1, "v_proj", "lora_B.default.weight")
    _rewrite(renamed, lambda d: {(k.replace(".default.", ".other.") if k == key else k): v for k, v in d.items()})
    with pytest.raises(UserError) as exc:
        engine(renamed)
    line = _one_line(exc)
    assert f"missing (first: {key})" in line and "unexpected (first: " + key.replace(".default.", ".other.") in line

    missing = _copy(tiny, tmp_path / "missing")
    _rewrite(missing, lambda d: {k: v for k, v in d.items() if k != key})
    with pytest.raises(UserError, match=r"1 weight\(s\) missing") as exc:
        engine(missing)
    assert key in _one_line(exc) and "unexpected" not in str(exc.value)

    shaped = _copy(tiny, tmp_path / "shaped")
    _rewrite(shaped, lambda d: {k: (v[:, :4].contiguous() if k == key else v) for k, v in d.items()})
    with pytest.raises(UserError, match="has shape") as exc:
        engine(shaped)
    assert key in _one_line(exc)

    lost = _copy(tiny, tmp_path / "lost")
    (lost / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match="shard model-00002-of-00002.safetensors named by"):
        engine(lost)


def test_plain_llava_weights_and_the_hf_engine_on_pllava_are_refused(tiny: Path, tmp_path: Path) -> None:
    """A LLaVA checkpoint under a PLLaVA config (the un-wrapped language keys of PLLaVA issue #81) is
    refused, not run half-random; and `--engine hf` on a PLLaVA checkpoint is refused before any loading."""
    from vidcap.engines.pllava_cli import choose_engine

    plain = _copy(tiny, tmp_path / "plain")
    prefix = "language_model.base_model.model."

    def unwrap(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {("language_model." + k[len(prefix):]).replace(".base_layer.", ".") if k.startswith(prefix) else k: v
                for k, v in data.items() if ".lora_" not in k}

    _rewrite(plain, unwrap)
    with pytest.raises(UserError) as exc:
        engine(plain)
    assert "no LoRA weights" in _one_line(exc) and "first language key: language_model.lm_head.weight" in str(exc.value)
    wrapped = _copy(tiny, tmp_path / "half")  # LoRA kept, the rest of the language model un-wrapped
    _rewrite(wrapped, lambda d: {k if ".lora_" in k else unwrap({k: v}).popitem()[0]: v for k, v in d.items()})
    with pytest.raises(UserError) as exc:
        engine(wrapped)
    assert "missing (first: language_model.base_model.model." in _one_line(exc)
    assert "unexpected (first: language_model." in str(exc.value)
    assert choose_engine(None, str(tiny)) == "pllava"
    with pytest.raises(UserError, match="is a PLLaVA checkpoint: use --engine pllava"):
        choose_engine("hf", str(tiny))


# ------------------------------------------------------------------------------------------ batching, frames
def test_batched_equals_one_at_a_time(tiny: Path) -> None:
    """Left-padded rows with their own prompts and frame counts give what each gives alone (ties aside)."""
    e = engine(tiny)
    samples = fixed_batch()
    tokens, logits = greedy(e, samples)
    gaps = []
    for i, sample in enumerate(samples):
        one_tokens, one_logits = greedy(e, [sample])
        compare(one_tokens[0], one_logits[0], tokens[i], logits[i], e.eos_ids, f"sample {i}")
        top = one_logits[0].topk(2, dim=-1).values
        gaps.append(float((top[:, 0] - top[:, 1]).min()))
    assert any(g > TIE_GAP for g in gaps)
    assert [c.text for c in e.caption(samples)] == [e.caption([s])[0].text for s in samples] or min(gaps) < TIE_GAP


def test_frame_fit_pad_letterboxes_and_crop_is_the_default(tiny: Path) -> None:
    wide = frames(1, 20, 60, 9)[0]
    boxed = letterbox(wide)
    assert boxed.shape == (60, 60, 3) and not boxed[:20].any() and np.array_equal(boxed[20:40], wide)
    crop, pad = engine(tiny), engine(tiny, frame_fit="pad")
    assert crop.config.frame_fit == "crop"
    kw = dict(num_frames=4, image_token_id=crop.image_token_id, visual_tokens=16, pad_token_id=crop.pad_token_id)
    sample = [Sample("w", [wide] * 4, "p")]
    cropped = build_batch(sample, crop.tokenizer, crop.image_processor, frame_fit="crop", **kw).pixel_values
    padded = build_batch(sample, pad.tokenizer, pad.image_processor, frame_fit="pad", **kw).pixel_values
    assert cropped.shape == padded.shape and not torch.allclose(cropped, padded)
    square = [Sample("s", frames(4, 32, 32, 4), "p")]
    torch.testing.assert_close(build_batch(square, crop.tokenizer, crop.image_processor, frame_fit="crop", **kw).pixel_values,
                               build_batch(square, pad.tokenizer, pad.image_processor, frame_fit="pad", **kw).pixel_values)


def test_prompt_holding_an_image_token_or_too_long_is_refused(tiny: Path) -> None:
    e = engine(tiny)
    with pytest.raises(UserError, match="exactly one"):
        e.check_prompt("look at <image> here", 4, True)
    with pytest.raises(UserError, match="too long"):
        e.check_prompt("describe every detail " * 2000, 4, True)
    got = e.caption([Sample("bad", frames(4, 32, 32, 1), "a <image> b"), Sample("ok", frames(4, 32, 32, 2), "fine")])
    assert not got[0].ok and "exactly one" in got[0].error and got[1].ok


# ---------------------------------------------------------------------------------------------- end to end
def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path, encoding="utf-8")))


@pytest.mark.timeout(300)
def test_caption_end_to_end_with_a_broken_video_mid_batch(tiny: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """`vidcap caption` picks the PLLaVA engine from the checkpoint, freezes alpha 4 and the pooling shape,
    and keeps every caption on its row around a broken video; the captions are those of a second run over
    the good videos alone, one per batch."""
    manifest = make_clips(tmp_path / "v", 7, broken={2: "truncated"})
    out = tmp_path / "out.csv"
    common = ["--model", str(tiny), "--num-frames", "4", "--pooling-shape", "2-2-2", "--max-new-tokens", "8",
              "--resize", "64"]
    assert main(["caption", str(manifest), "-o", str(out), "--batch-size", "3", "--shards", "2", *common]) == 0
    assert "7 rows: 6 captioned, 1 failed" in capsys.readouterr().out
    rows = _rows(out)
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(7)]
    assert rows[2]["status"] == "error" and rows[2]["error"] and not rows[2]["text"]
    engine_config = json.loads((tmp_path / "out.run" / "config.json").read_text())["engine"]
    config = engine_config["settings"]
    assert (engine_config["name"], config["lora_alpha"], config["pooling_shape"], config["frame_fit"]) == \
        ("pllava", 4.0, [2, 2, 2], "crop")

    good = tmp_path / "good.csv"
    good.write_text("path\n" + "".join(f"{tmp_path / 'v' / r['path']}\n" for i, r in enumerate(rows) if i != 2))
    alone = tmp_path / "alone.csv"
    assert main(["caption", str(good), "-o", str(alone), "--batch-size", "1", "--engine", "pllava", *common]) == 0
    by_path = {Path(r["path"]).name: r["text"] for r in _rows(alone)}
    for i, row in enumerate(rows):
        if i != 2:
            assert row["status"] == "ok" and row["text"] == by_path[row["path"]], (i, row["text"], by_path[row["path"]])


def test_make_tiny_model_command(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["make-tiny-model", str(tmp_path / "m"), "--family", "pllava"]) == 0
    assert (tmp_path / "m" / "model.safetensors.index.json").is_file()
    assert "tiny pllava model" in capsys.readouterr().out


def test_settings_and_start_checks_are_one_line_errors(tiny: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """flash_attention_2 is checked at start (no CUDA here); bad flags and a folder that is not PLLaVA are
    refused by `vidcap caption` before anything is frozen; the default alpha is 4."""
    assert PllavaSettings().lora_alpha == 4.0
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA GPU"):
        engine(tiny, attn="flash_attention_2")
    with pytest.raises(UserError, match="--frame-fit"):
        PllavaSettings(model=str(tiny), frame_fit="stretch")
    manifest = make_clips(tmp_path / "v", 1)
    base = ["caption", str(manifest), "-o", str(tmp_path / "o.csv"), "--num-frames", "4"]
    for extra, message in ((["--model", str(tiny), "--pooling-shape", "4-x-2"], "--pooling-shape must be three"),
                           (["--model", str(tiny), "--lora-alpha", "-1"], "--lora-alpha must be 0 or more"),
                           (["--model", str(tmp_path / "v"), "--engine", "pllava"], "no config.json"),
                           (["--model", str(tiny), "--tp-backend", "transformers"], "--tp-backend deepspeed")):
        assert main(base + extra) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    assert not (tmp_path / "o.run" / "config.json").exists()


def test_full_size_13b_layout_builds_without_memory() -> None:
    """The 13B configuration (vicuna-13b text, CLIP ViT-L/14-336 vision, LoRA r=128 on q/v) builds on the
    meta device with the published key names and shapes; 4-12-12 pooling gives 576 tokens per video."""
    from vidcap.engines.pllava_checkpoint import PllavaCheckpoint, published_key
    from vidcap.engines.pllava_load import build_empty

    config = {
        "model_type": "llava", "architectures": ["MagicForConditionalGeneration"], "image_token_index": 32000,
        "pooling_shape": [16, 12, 12], "frame_shape": [24, 24], "num_frames": 16, "projector_hidden_act": "gelu",
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "text_config": {"model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
                        "num_hidden_layers": 40, "num_attention_heads": 40, "vocab_size": 32064,
                        "max_position_embeddings": 4096, "pad_token_id": 0},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                          "projection_dim": 768},
    }
    layout = PllavaCheckpoint(folder=Path("pllava-13b"), config=config, weight_map={},
                              lora_targets=("q_proj", "v_proj"), lora_rank=128)
    model = build_empty(layout, pooling_shape=(4, 12, 12), lora_alpha=4.0)
    shapes = {published_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert model.tokens_per_video == 576
    assert shapes[LORA.format(39, "q_proj", "lora_A.default.weight")] == (128, 5120)
    assert shapes[LORA.format(39, "v_proj", "lora_B.default.weight")] == (5120, 128)
    assert shapes["multi_modal_projector.linear_1.weight"] == (5120, 1024)
    assert shapes["vision_tower.vision_model.embeddings.position_embedding.weight"] == (577, 1024)
    assert shapes["language_model.base_model.model.lm_head.weight"] == (32064, 5120)
    scale = model.base_language_model().model.layers[0].self_attn.q_proj.scaling["default"]
    assert scale == 4.0 / 128
