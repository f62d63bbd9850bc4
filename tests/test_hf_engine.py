"""The Hugging Face engine on real tiny random-weight models of every family, loaded through from_pretrained.

Random weights give near-tied logits, and padding moves logits by ~2e-7: two greedy runs may then part ways
at a genuine tie. Comparisons of tokens therefore accept a divergence only where the top-2 logit gap of the
reference run is below TIE_GAP (fifty times that noise), and fail anywhere else.
"""

from __future__ import annotations

import dataclasses

import copy
import json
import os
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads made generate 10-100x slower on these machines

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessorPil, Qwen2VLImageProcessorPil
from transformers.utils import is_torchvision_available

from vidcap.engines import create_engine
from vidcap.engines.hf_settings import HFSettings
from vidcap.engines.base import Sample
from vidcap.engines.hf import REFERENCE_FRAME_HW, HFEngine
from vidcap.engines.hf_inputs import build_inputs, render_prompt, takes_video
from vidcap.engines.hf_load import load_processor, resolve_attn, resolve_dtype
from vidcap.engines.hf_video import ClipFramesVideoProcessor, QwenFramesVideoProcessor
from vidcap.errors import UserError
from vidcap.prompts import PRESETS
from vidcap.fixtures.tiny_models import FAMILIES, make_tiny_model

torch.set_num_threads(1)

MAX_NEW = 24
TIE_GAP = 1e-5  # padding moved logits by ~2e-7 here; real gaps were 1e-4 and up
VIDEO_FAMILIES = {"llava-next-video", "qwen2-vl", "qwen2.5-vl"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: str(make_tiny_model(root / family, family)) for family in FAMILIES}


@pytest.fixture(scope="module")
def engines(model_dirs: dict[str, str]) -> dict[str, HFEngine]:
    return {family: HFEngine.loaded(HFSettings(model=path, max_new_tokens=MAX_NEW))
            for family, path in model_dirs.items()}


def frames(count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def mixed_batch() -> list[Sample]:
    """Videos of different sizes and prompt lengths, and an image row, so that left padding varies."""
    return [
        Sample("a", frames(3, 48, 80, 1), PRESETS["video"].text),
        Sample("b", frames(1, 64, 64, 2), PRESETS["image-short"].text, is_video=False),
        Sample("c", frames(3, 40, 40, 3), PRESETS["video-short"].text),
    ]


def greedy_run(engine: HFEngine, samples: list[Sample]) -> tuple[list[list[int]], torch.Tensor]:
    """New tokens and their logits, from the engine's own inputs and generation config."""
    inputs = build_inputs(engine.processor, samples).to(engine.device, dtype=engine.dtype)
    generation = copy.deepcopy(engine.generation)
    generation.output_logits = generation.return_dict_in_generate = True
    out = engine.model.generate(**inputs, generation_config=generation)
    return out.sequences[:, inputs["input_ids"].shape[1]:].tolist(), torch.stack(out.logits, dim=1)


def diverges_at_tie(engine: HFEngine, ref: list[int], ref_logits: torch.Tensor, other: list[int]) -> bool:
    """False when the runs agree up to the end of `ref`; True at a near-tie; fails at a clear difference."""
    for step, (x, y) in enumerate(zip(ref, other)):
        if x != y:
            top = ref_logits[step].float().topk(2).values
            gap = float(top[0] - top[1])
            assert gap < TIE_GAP, f"token {step} differs ({x} vs {y}) although the top-2 gap is {gap:.2e}"
            return True
        if x in engine.eos_ids:
            break
    return False


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_gives_each_sample_its_own_caption(engines: dict[str, HFEngine], family: str) -> None:
    """Captioned in one left-padded batch (videos and an image row of other sizes and prompt lengths), each
    sample gets the caption it gets alone, in order."""
    engine = engines[family]
    samples = mixed_batch()
    batch = engine.caption(samples)
    assert len(batch) == len(samples)
    batch_tokens, _ = greedy_run(engine, samples)
    compared = 0
    for i, sample in enumerate(samples):
        alone = engine.caption([sample])[0]
        assert batch[i].ok and alone.ok
        assert batch[i].prompt_tokens == alone.prompt_tokens > 0
        assert 1 <= batch[i].generated_tokens <= MAX_NEW
        assert batch[i].text == batch[i].text.strip() and batch[i].text
        alone_tokens, alone_logits = greedy_run(engine, [sample])
        if not diverges_at_tie(engine, alone_tokens[0], alone_logits[0], batch_tokens[i]):
            assert batch[i].text == alone.text
            assert batch[i].generated_tokens == alone.generated_tokens
            compared += 1
    assert compared >= 2, "too many near-ties for the comparison to mean anything"


@pytest.mark.parametrize("family", FAMILIES)
def test_captions_are_deterministic_and_clean(engines: dict[str, HFEngine], family: str) -> None:
    engine = engines[family]
    first = engine.caption(mixed_batch())
    assert [c.text for c in engine.caption(mixed_batch())] == [c.text for c in first]
    for caption, sample in zip(first, mixed_batch()):
        assert not caption.text.startswith(sample.prompt[:20])
        for token in engine.processor.tokenizer.all_special_tokens:
            assert token not in caption.text


@pytest.mark.parametrize("family", FAMILIES)
def test_video_frames_reach_the_model_as_documented(engines: dict[str, HFEngine], family: str) -> None:
    """Video families get one video; image families get one image per frame."""
    engine = engines[family]
    inputs = build_inputs(engine.processor, mixed_batch()[:1])
    assert takes_video(engine.processor) == (family in VIDEO_FAMILIES)
    if family in VIDEO_FAMILIES:
        assert "pixel_values" not in inputs
        videos = inputs["video_grid_thw"] if "video_grid_thw" in inputs else inputs["pixel_values_videos"]
        assert len(videos) == 1
    else:
        assert "pixel_values_videos" not in inputs
        assert len(inputs["pixel_values"]) == 3


def test_checkpoint_without_chat_template_gets_placeholders_then_prompt(engines: dict[str, HFEngine],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engines["llava"]
    monkeypatch.setattr(engine.processor, "chat_template", None)
    assert render_prompt(engine.processor, "Describe.", "image", 3) == "<image><image><image>\nDescribe."
    assert engine.caption(mixed_batch()[:1])[0].ok


@pytest.mark.parametrize("family", FAMILIES)
def test_check_prompt_is_exact_at_the_context_limit(engines: dict[str, HFEngine], model_dirs: dict[str, str],
                                                     family: str) -> None:
    """prompt tokens + visual tokens + max_new_tokens == context passes; one more token is refused."""
    engine = engines[family]
    prompt = PRESETS["video"].text
    frame = np.zeros((*REFERENCE_FRAME_HW, 3), dtype=np.uint8)
    used = build_inputs(engine.processor, [Sample("x", [frame] * 3, prompt)])["input_ids"].shape[1]
    fits = HFSettings(model=model_dirs[family], max_new_tokens=engine.context - used)
    HFEngine(fits).attach(engine.model, engine.processor).check_prompt(prompt, 3, True)
    fits = dataclasses.replace(fits, max_new_tokens=fits.max_new_tokens + 1)
    with pytest.raises(UserError, match="context"):
        HFEngine(fits).attach(engine.model, engine.processor).check_prompt(prompt, 3, True)


def test_too_long_prompt_is_refused_with_the_token_budget(engines: dict[str, HFEngine]) -> None:
    """The Open-Sora failure: a long prompt plus the frames overflows the context and gives empty captions."""
    engine = engines["llava"]
    engine.check_prompt(PRESETS["video-3ex"].text, 3, True)
    long_prompt = PRESETS["video-3ex"].text * 12
    with pytest.raises(UserError) as refused:
        engine.check_prompt(long_prompt, 3, True)
    # tiny LLaVA: (32 px / 8 px)^2 = 16 patches per frame, CLS dropped, three frames as three images
    assert "48 visual tokens" in str(refused.value)


def test_overflowing_sample_becomes_an_error_and_the_rest_is_captioned(engines: dict[str, HFEngine]) -> None:
    engine = engines["llava"]
    samples = mixed_batch()
    samples[1].prompt = PRESETS["image-3ex"].text * 12
    captions = engine.caption(samples)
    assert [c.ok for c in captions] == [True, False, True]
    assert "context" in captions[1].error
    assert captions[0].text == engine.caption([samples[0]])[0].text


def test_engine_is_created_by_name_and_reports_stats(model_dirs: dict[str, str]) -> None:
    engine = create_engine("hf", HFSettings(model=model_dirs["llava"], max_new_tokens=4))
    assert isinstance(engine, HFEngine)
    engine.open()
    stats = engine.stats()
    assert stats["device"] == "cpu" and stats["dtype"] == "float32" and stats["random_weights"] is True
    assert stats["context"] == 4096
    engine.close()


def test_bf16_runs_on_cpu(model_dirs: dict[str, str]) -> None:
    """Pixel values follow the model's dtype, so a half-precision model gets half-precision frames."""
    engine = HFEngine.loaded(HFSettings(model=model_dirs["llava-next"], dtype="bf16", max_new_tokens=4))
    assert engine.dtype == torch.bfloat16
    caption = engine.caption(mixed_batch()[:1])[0]
    assert caption.ok and caption.generated_tokens >= 1


def test_runtime_options_are_checked() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("fp16", cpu) == torch.float16
    with pytest.raises(UserError, match="dtype"):
        resolve_dtype("int8", cpu)
    with pytest.raises(UserError, match="CUDA"):
        resolve_attn("flash_attention_2", cpu)
    with pytest.raises(UserError, match="attn"):
        resolve_attn("flash", cpu)
    assert resolve_attn("eager", cpu) == "eager"


@pytest.mark.parametrize("bf16", [True, False])
def test_gpu_dtype_default(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_dtype(None, torch.device("cuda")) == (torch.bfloat16 if bf16 else torch.float16)


def test_missing_model_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError):
        HFEngine.loaded(HFSettings(model=str(tmp_path / "nothing-here")))


def test_text_only_checkpoint_is_refused(tmp_path, model_dirs: dict[str, str]) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_dirs["llava"])
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="image"):
        HFEngine.loaded(HFSettings(model=str(tmp_path)))


@pytest.mark.skipif(is_torchvision_available(), reason="the guard is for machines without torchvision")
def test_video_processor_without_stand_in_is_a_clear_error(model_dirs: dict[str, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vidcap.engines.hf_load.STAND_INS", {})
    with pytest.raises(UserError, match="needs torchvision"):
        load_processor(model_dirs["qwen2-vl"])


def test_hub_style_qwen_checkpoint_with_only_preprocessor_config(tmp_path, model_dirs: dict[str, str]) -> None:
    """Qwen2-VL checkpoints on the hub keep one legacy preprocessor_config.json (min_pixels / max_pixels) and
    no video config: the video frames then take the image settings, as transformers does."""
    folder = tmp_path / "legacy"
    shutil.copytree(model_dirs["qwen2-vl"], folder)
    image = json.loads((folder / "processor_config.json").read_text())["image_processor"]
    size = image.pop("size")
    image.update(min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
                 processor_class="Qwen2VLProcessor")
    (folder / "preprocessor_config.json").write_text(json.dumps(image))
    (folder / "processor_config.json").unlink()
    engine = HFEngine.loaded(HFSettings(model=str(folder), max_new_tokens=4))
    if not is_torchvision_available():
        assert engine.processor.video_processor.frame_processor.size.longest_edge == size["longest_edge"]
    assert all(c.ok for c in engine.caption(mixed_batch()))


def test_qwen_stand_in_pairs_frames_like_the_video_layout() -> None:
    """Two identical frames make a video patch equal to the image patch of that frame (the image processor
    fills the temporal axis with copies), and an odd frame count repeats the last frame."""
    settings = {"patch_size": 8, "merge_size": 2, "temporal_patch_size": 2,
                "size": {"shortest_edge": 32 * 32, "longest_edge": 64 * 64}}
    stand_in = QwenFramesVideoProcessor.from_video_config(settings)
    frame = frames(1, 48, 80, 7)[0]
    image = Qwen2VLImageProcessorPil(**settings)([frame], return_tensors="np")
    video = stand_in([np.stack([frame, frame])])
    np.testing.assert_allclose(video["pixel_values_videos"], image["pixel_values"], rtol=0, atol=1e-6)
    assert video["video_grid_thw"].tolist() == image["image_grid_thw"].tolist()
    three = stand_in([np.stack(frames(3, 48, 80, 8))])
    last_pair = stand_in([np.stack(frames(3, 48, 80, 8)[2:] * 2)])["pixel_values_videos"]
    assert three["video_grid_thw"].tolist() == [[2, *image["image_grid_thw"][0, 1:].tolist()]]
    np.testing.assert_allclose(three["pixel_values_videos"][-len(last_pair):], last_pair, rtol=0, atol=1e-6)


def test_clip_stand_in_processes_each_frame_like_an_image() -> None:
    settings = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    clip = frames(3, 48, 80, 9)
    video = ClipFramesVideoProcessor.from_video_config(settings)([np.stack(clip)])["pixel_values_videos"]
    image = CLIPImageProcessorPil(**settings)(clip, return_tensors="np")["pixel_values"]
    assert video.shape == (1, 3, 3, 32, 32)
    np.testing.assert_allclose(video[0], image, rtol=0, atol=1e-6)
