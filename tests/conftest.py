"""Test-wide settings: one thread per process (2 threads made generate 10-100x slower on these machines)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: E402,F401  (fixtures for Slurm tests)

# transformers' log handler keeps the sys.stderr of the moment it is made. Made inside a test that captures
# with capsys, it later writes to that closed stream ("--- Logging error ---" and a traceback in another
# test's stderr), so which test sees it depends on the order: make it now, once for the session.
from transformers.utils import logging as _transformers_logging  # noqa: E402

_transformers_logging.get_logger("transformers")
