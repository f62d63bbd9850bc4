"""Tiny random-weight models: built offline, small, loadable as hub checkpoints, and loudly labelled noise."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import hashlib
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForImageTextToText

from vidcap.cli import main
from vidcap.engines.hf_load import load_processor
from vidcap.fixtures.tiny_models import FAMILIES, NOISE_WARNING, make_tiny_model


def digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_small_and_loads_like_a_checkpoint(tmp_path: Path, family: str) -> None:
    folder = make_tiny_model(tmp_path / family, family)
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 1_200_000, f"{family}: {size} bytes"
    assert NOISE_WARNING in (folder / "README.md").read_text()
    config = AutoConfig.from_pretrained(folder)
    assert config.vidcap_tiny_random is True
    assert config.model_type == family.replace("-", "_").replace(".", "_")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = load_processor(str(folder))
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)
    assert processor.tokenizer.padding_side == "left"
    assert processor.chat_template
    assert processor.tokenizer.convert_tokens_to_ids(processor.image_token) == processor.image_token_id


def test_tokenizer_pieces_are_printable_text(tmp_path: Path) -> None:
    """Whatever a random model emits decodes to printable word pieces, never to stray bytes."""
    tokenizer = load_processor(str(make_tiny_model(tmp_path / "m"))).tokenizer
    special = set(tokenizer.all_special_ids)
    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer)) if i not in special]
    assert all(piece.isprintable() or piece == "\n" for piece in pieces)
    assert sum(len(piece.strip()) >= 3 for piece in pieces) > 100  # learned word pieces, not just letters
    assert tokenizer.decode(tokenizer("A red car at night.")["input_ids"], skip_special_tokens=True) == \
        "A red car at night."


def test_width_sets_the_language_and_vision_sizes(tmp_path: Path) -> None:
    config = AutoConfig.from_pretrained(make_tiny_model(tmp_path / "wide", "qwen2-vl", width=128))
    assert config.text_config.hidden_size == 128
    assert config.vision_config.embed_dim == 64 and config.vision_config.hidden_size == 128


def test_seed_decides_the_weights(tmp_path: Path) -> None:
    a, b, c = (make_tiny_model(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert digest(a) == digest(b) != digest(c)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="family"):
        make_tiny_model(tmp_path / "x", "gpt2")
    with pytest.raises(ValueError, match="multiple of 32"):
        make_tiny_model(tmp_path / "x", width=48)


def test_cli_builds_and_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-tiny-model", str(tmp_path / "v"), "--family", "llava-next-video", "--width", "128"]) == 0
    out = capsys.readouterr()
    assert NOISE_WARNING in out.err and "written to" in out.out
    assert AutoConfig.from_pretrained(tmp_path / "v").text_config.hidden_size == 128


def test_cli_refuses_bad_width_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-tiny-model", str(tmp_path / "v"), "--width", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "multiple of 32" in err
    with pytest.raises(SystemExit) as exited:
        main(["make-tiny-model", str(tmp_path / "v"), "--family", "gpt2"])
    assert exited.value.code == 2
