"""Captioning prompts: named presets and prompt files, each for videos or for images.

The kind matters: an image prompt on video frames (or the reverse) gives captions about "the image" or
about motion that is not there, so a mismatch is refused at start.

A prompt file is plain UTF-8 text. Its kind may be declared on its first line, which is then not part of the
prompt:

    # kind: video

Without that line the file is taken to suit the run it is used in (videos or images): only a declared kind
can be checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vidcap.errors import UserError

Kind = Literal["video", "image"]

_KIND_LINE = re.compile(r"^\s*#\s*kind\s*:\s*(video|image)\s*$", re.IGNORECASE)


@dataclass
class Prompt:
    """A prompt's text and whether it is written for videos or for images."""

    name: str
    text: str
    kind: Kind


_VIDEO_LEAD = "These are frames from one video, in time order."
_VIDEO_DETAIL = (
    "Describe the video in a few sentences: who or what is in it and what happens, the setting, how the "
    "camera moves, and the visual style (lighting, colours, kind of shot, live action or animation). "
    "Write the description only, as plain prose, without naming the frames and without guessing at "
    "anything that cannot be seen."
)
_IMAGE_DETAIL = (
    "Describe the image in a few sentences: who or what is in it, the setting, and the visual style "
    "(lighting, colours, composition, photograph or illustration). Write the description only, as plain "
    "prose, without guessing at anything that cannot be seen."
)
_IMAGE_EXAMPLES = (
    "A golden retriever runs along a sandy beach at sunset, kicking up wet sand as small waves roll in "
    "behind it. The low sun throws long shadows and bathes everything in warm orange light. It is a "
    "low-angle photograph with a shallow depth of field.",
    "A narrow street in an old town is lined with pastel houses and potted plants. A cyclist in a yellow "
    "jacket rides away over wet cobblestones. The light is soft and overcast and the colours are muted, "
    "like an old film photograph.",
    "A cartoon fox in a green scarf sits on a mossy log in a misty forest, holding a paper lantern. It is "
    "painted in a soft watercolour style with glowing highlights and a calm, dreamy mood.",
)
_VIDEO_EXAMPLES = (
    "A golden retriever runs along a sandy beach at sunset while small waves roll in behind it. The camera "
    "tracks beside the dog at a low angle, keeping it in the centre of the frame. Warm orange light, long "
    "shadows and a shallow depth of field give the clip a cinematic look.",
    "A cyclist in a yellow jacket rides down a narrow cobbled street between pastel houses and turns a "
    "corner. The camera stays still on a tripod as the rider moves away. The light is soft and overcast "
    "and the colours are muted, like old film.",
    "In a hand-drawn animation, a fox in a green scarf walks through a misty forest carrying a paper "
    "lantern, then stops to look up at falling leaves. The view slowly zooms in. Soft watercolour "
    "textures and glowing highlights give it a calm, dreamy mood.",
)


def _with_examples(lead: str, examples: tuple[str, ...], subject: str, content: str) -> str:
    shown = "\n".join(f"Example {i}: {text}" for i, text in enumerate(examples, 1))
    return (f"{lead}Here are three example descriptions, to show the length and style wanted:\n{shown}\n"
            f"Now describe the given {subject} in the same way: {content}, the setting, and the visual style. "
            f"Write the description only.")


PRESETS: dict[str, Prompt] = {p.name: p for p in (
    Prompt("video", f"{_VIDEO_LEAD} {_VIDEO_DETAIL}", "video"),
    Prompt("video-short", f"{_VIDEO_LEAD} Describe the video in one sentence.", "video"),
    Prompt("video-3ex", _with_examples(f"{_VIDEO_LEAD} ", _VIDEO_EXAMPLES, "video",
                                       "what is in it and what happens"), "video"),
    Prompt("image", _IMAGE_DETAIL, "image"),
    Prompt("image-short", "Describe the image in one sentence.", "image"),
    Prompt("image-3ex", _with_examples("", _IMAGE_EXAMPLES, "image", "what is in it"), "image"),
)}


def resolve_prompt(name: str | None, file: str | None, is_video: bool) -> Prompt:
    """The prompt for a run: `--prompt NAME` or `--prompt-file PATH`, else the detailed preset of the run's
    kind. Raises `UserError` for an unknown name, an unreadable or empty file, or a kind that does not match."""
    run_kind: Kind = "video" if is_video else "image"
    if name and file:
        raise UserError("give --prompt or --prompt-file, not both")
    if file:
        prompt = _read_prompt_file(file, run_kind)
    else:
        name = name or run_kind
        if name not in PRESETS:
            raise UserError(f"unknown prompt {name!r} (choose from {', '.join(PRESETS)}, or use --prompt-file)")
        prompt = PRESETS[name]
    if prompt.kind != run_kind:
        suggestions = ", ".join(n for n, p in PRESETS.items() if p.kind == run_kind)
        raise UserError(f"prompt {prompt.name!r} is written for {prompt.kind}s but this run captions "
                        f"{run_kind}s (use one of {suggestions})")
    return prompt


def _read_prompt_file(file: str, run_kind: Kind) -> Prompt:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read prompt file {file}: {exc}") from None
    lines = text.strip().splitlines()
    kind: Kind = run_kind
    if lines and (match := _KIND_LINE.match(lines[0])):
        kind = match.group(1).lower()  # type: ignore[assignment]
        lines = lines[1:]
    body = "\n".join(lines).strip()
    if not body:
        raise UserError(f"prompt file {file} is empty")
    return Prompt(name=f"file:{file}", text=body, kind=kind)
