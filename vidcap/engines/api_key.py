"""Where the API key comes from, and keeping it out of everything we print or store.

The key is read at engine start from a file named by `--api-key-file` or from `OPENAI_API_KEY`, never
from argv (visible in `ps` and in Slurm's job records) and never into the run config. Messages we build
from server answers go through `redact`, since a compatible server may echo the key it was sent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from vidcap.errors import UserError

ENV_VAR = "OPENAI_API_KEY"


def resolve_api_key(api_key_file: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The key from `api_key_file` if given, else from the environment; UserError naming both ways if none."""
    if api_key_file:
        path = Path(api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"--api-key-file {path} is not UTF-8 text") from None
        if not key:
            raise UserError(f"--api-key-file {path} is empty")
        if any(c.isspace() for c in key):
            raise UserError(f"--api-key-file {path} must hold only the key, on one line")
        return key
    key = environ.get(ENV_VAR, "").strip()
    if key:
        return key
    raise UserError(f"no API key: set {ENV_VAR} in the environment or pass --api-key-file FILE (a file holding "
                    f"only the key). For a server that checks no key (vLLM without --api-key) set {ENV_VAR}=EMPTY")


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` replaced."""
    return text.replace(secret, "[redacted]") if secret else text
