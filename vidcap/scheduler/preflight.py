"""Checks made on the submitting machine before a job array goes out, so that a mistake every task would
make (a wrong API key, a bad setting) is one line now rather than N failed tasks in the queue later.

Only what is cheap here is checked: the API engine is built and asks GET /models once. A Hugging Face
model is not loaded on a login node; its tasks check their prompt against the model at start.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys

from vidcap.engines.api_key import ENV_VAR
from vidcap.tasks.spec import TaskSpec

PREFLIGHT_TIMEOUT_S = 15.0


def check_before_submit(spec: TaskSpec) -> None:
    """Raise a UserError for what would fail in every task; warn about what might; say where the key goes."""
    if spec.engine != "openai":
        return
    from vidcap.engines.openai_api import ApiUnreachableError, OpenAIEngine

    # one try, bounded: the tasks retry with the run's own settings
    settings = spec.engine_settings
    quick = dataclasses.replace(settings, max_request_attempts=1,
                                request_timeout_s=min(settings.request_timeout_s, PREFLIGHT_TIMEOUT_S))
    engine = OpenAIEngine(quick)
    try:
        engine.open()
    except ApiUnreachableError as exc:  # compute nodes may reach what a login node cannot: the tasks will tell
        _warn(f"{exc}; submitting anyway (the tasks will stop at start if they cannot reach it either)")
    finally:
        engine.close()
    _advise_on_key(settings.api_key_file)


def _advise_on_key(api_key_file: str | None) -> None:
    if api_key_file is None:
        _warn(f"the API key goes to the tasks in their environment ({ENV_VAR}), and Slurm keeps a job's "
              f"environment with the job (in accounting too where AccountingStoreFlags=job_env); "
              f"--api-key-file FILE (mode 600, on a filesystem the nodes share) keeps it in that file only")
        return
    mode = os.stat(api_key_file).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _warn(f"--api-key-file {api_key_file} can be read by others (mode {stat.filemode(mode)}); "
              f"chmod 600 {api_key_file}")


def _warn(message: str) -> None:
    print(f"vidcap: warning: {message}", file=sys.stderr)
