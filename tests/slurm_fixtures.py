"""Fixtures for tests that need the project's Slurm test cluster (`make cluster-up`).

A test that asks for `slurm_cluster` skips when no cluster answers, except in CI (env CI set) or with
VIDCAP_REQUIRE_SLURM=1, where it fails: a CI run whose Slurm tests all skipped would prove nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _cluster_problem() -> str | None:
    """Why the cluster cannot run jobs, or None when its node is up."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except FileNotFoundError:
        return "sinfo is not installed"
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#!%$@^-") in {"idle", "mixed", "allocated", "completing"} for s in states):
        return f"no node is up (sinfo states: {states})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The test cluster answers; skip (fail in CI) otherwise."""
    problem = _cluster_problem()
    if problem is None:
        return
    message = f"Slurm test cluster unavailable ({problem}); start it with `make cluster-up`"
    if os.environ.get("CI") or os.environ.get("VIDCAP_REQUIRE_SLURM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def slurm_job_env(slurm_cluster: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs submitted by this test can import the helper modules in tests/ (sbatch exports PYTHONPATH)."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{path}" if path else str(TESTS))
