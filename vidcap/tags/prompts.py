"""What the model is asked for each tag key: a built-in instruction, or the user's own from `--prompt-file`.

An instruction holds `{text}` where the caption goes (replaced literally, so JSON examples with braces are
safe); one without it gets the caption appended after a blank line. The built-in ones ask for a JSON list,
which the parser reads most reliably, and for `[]` when there is nothing, so "nothing found" is an answer and
not a parse failure.
"""

from __future__ import annotations

from pathlib import Path

from vidcap.errors import UserError

KEYS = ("objects", "actions")
PLACEHOLDER = "{text}"

_COMMON = (
    "Answer with a JSON list of short lowercase phrases and nothing else, for example {example}. "
    "Name each one once. If there are none, answer [].\n\nDescription: {text}"
)

#: both keys in one answer (`--key objects --key actions`): one request per row instead of two
BOTH = ("Here is the description of a video. List the objects in it (people, animals, vehicles and other things "
        "that are seen, each as a short noun phrase without articles) and the actions in it (what they do, each "
        "as a short verb phrase). Answer with a JSON object and nothing else, for example "
        '{"objects": ["woman", "dog"], "actions": ["walking", "throwing a ball"]}. Name each one once; use [] '
        "for a list with nothing in it.\n\nDescription: {text}")

BUILT_IN = {
    "objects": "Here is the description of a video. List the objects in it: people, animals, vehicles and "
               "other things that are seen, each as a short noun phrase without articles. "
               + _COMMON.replace("{example}", '["woman", "dog", "red car"]'),
    "actions": "Here is the description of a video. List the actions in it: what the people, animals and "
               "things do, each as a short verb phrase. "
               + _COMMON.replace("{example}", '["walking", "riding a bicycle", "pouring water"]'),
}


def check_key(key: str) -> str:
    if key not in KEYS:
        raise UserError(f"unknown tag key {key!r} (choose from {', '.join(KEYS)})")
    return key


def check_keys(keys: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """One or two distinct known keys, in the order given."""
    if not keys:
        raise UserError(f"no tag key given (--key {' or --key '.join(KEYS)})")
    for key in keys:
        check_key(key)
    if len(set(keys)) != len(keys):
        raise UserError(f"--key {keys[0]} given twice")
    return tuple(keys)


def instruction(key: str | tuple[str, ...], prompt_file: str | Path | None = None) -> str:
    """The instruction for `key` (or keys): the file's text when given, else the built-in one."""
    keys = check_keys([key] if isinstance(key, str) else list(key))
    if prompt_file is None:
        return BUILT_IN[keys[0]] if len(keys) == 1 else BOTH
    path = Path(prompt_file)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UserError(f"--prompt-file {path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"--prompt-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"--prompt-file {path}: cannot read it ({exc.strerror or exc})") from None
    if not text:
        raise UserError(f"--prompt-file {path}: the file is empty")
    return text


def fill(instruction_text: str, text: str) -> str:
    """The user message for one caption."""
    if PLACEHOLDER in instruction_text:
        return instruction_text.replace(PLACEHOLDER, text)
    return f"{instruction_text}\n\n{text}"
