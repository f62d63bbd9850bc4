"""Prompt presets and prompt files: names, kinds, and the refusals that stop a run before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidcap.errors import UserError
from vidcap.prompts import PRESETS, Prompt, resolve_prompt


def test_presets_cover_both_kinds_with_detailed_short_and_example_variants() -> None:
    for kind in ("video", "image"):
        for name in (kind, f"{kind}-short", f"{kind}-3ex"):
            assert PRESETS[name].kind == kind and PRESETS[name].name == name
    for name in ("video-3ex", "image-3ex"):
        assert [f"Example {i}:" in PRESETS[name].text for i in (1, 2, 3)] == [True] * 3
    assert len(PRESETS["video-short"].text) < len(PRESETS["video"].text) < len(PRESETS["video-3ex"].text)
    assert "frames from one video" in PRESETS["video"].text


@pytest.mark.parametrize("is_video, expected", [(True, "video"), (False, "image")])
def test_default_is_the_detailed_preset_of_the_run_kind(is_video: bool, expected: str) -> None:
    assert resolve_prompt(None, None, is_video) is PRESETS[expected]


@pytest.mark.parametrize("name, is_video", [("image", True), ("image-3ex", True), ("video-short", False)])
def test_kind_mismatch_is_refused(name: str, is_video: bool) -> None:
    with pytest.raises(UserError, match="written for"):
        resolve_prompt(name, None, is_video)


def test_unknown_name_lists_the_presets() -> None:
    with pytest.raises(UserError, match="video-3ex"):
        resolve_prompt("vidoe", None, True)


def test_name_and_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("Describe it.")
    with pytest.raises(UserError, match="not both"):
        resolve_prompt("video", str(path), True)


def test_file_with_kind_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# Kind: image\nDescribe the picture.\nMention colours.\n")
    assert resolve_prompt(None, str(path), False) == Prompt(
        name=f"file:{path}", text="Describe the picture.\nMention colours.", kind="image")
    with pytest.raises(UserError, match="written for images"):
        resolve_prompt(None, str(path), True)


@pytest.mark.parametrize("is_video", [True, False])
def test_file_without_kind_line_suits_the_run(tmp_path: Path, is_video: bool) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("# a heading that is part of the prompt\nDescribe it.\n")
    prompt = resolve_prompt(None, str(path), is_video)
    assert prompt.kind == ("video" if is_video else "image")
    assert prompt.text == "# a heading that is part of the prompt\nDescribe it."


@pytest.mark.parametrize("content", ["", "  \n\n", "# kind: video\n\n"])
def test_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(UserError, match="empty"):
        resolve_prompt(None, str(path), True)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        resolve_prompt(None, str(tmp_path / "missing.txt"), True)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="cannot read"):
        resolve_prompt(None, str(binary), True)
