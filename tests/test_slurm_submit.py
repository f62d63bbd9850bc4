"""Submitting a run as several job arrays on the test cluster: an array Slurm accepted is recorded at once,
even when a later one is refused, so that a resubmission never runs a queued shard twice."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from worker_helpers import make_clips

from vidcap.cli import main
from vidcap.run import RunDir
from vidcap.scheduler.slurm import job_states

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_job_env")]


def shims(folder: Path, max_array_size: int, refuse_from_call: int) -> dict[str, str]:
    """`scontrol show config` says MaxArraySize is `max_array_size`; sbatch refuses from its Nth call on."""
    folder.mkdir()
    real_scontrol, real_sbatch = shutil.which("scontrol"), shutil.which("sbatch")
    (folder / "scontrol").write_text(f"""#!/bin/sh
if [ "$1 $2" = "show config" ]; then echo "MaxArraySize            = {max_array_size}"; exit 0; fi
exec {real_scontrol} "$@"
""")
    (folder / "sbatch").write_text(f"""#!/bin/sh
n=$(($(cat "{folder}/calls" 2>/dev/null || echo 0) + 1)); echo $n > "{folder}/calls"
if [ $n -ge {refuse_from_call} ]; then echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy" >&2; exit 1; fi
exec {real_sbatch} "$@"
""")
    for name in ("scontrol", "sbatch"):
        (folder / name).chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.timeout(180)
def test_arrays_accepted_before_a_refusal_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    manifest = make_clips(tmp_path / "v", 5)
    run = RunDir.at(tmp_path / "run")
    argv = ["submit", str(manifest), "--run", str(run.root), "--engine", "noop", "--shards", "5",
            "--executor", "slurm", "--time", "5", "--sbatch", "hold=true"]
    for name, value in shims(tmp_path / "bin", max_array_size=3, refuse_from_call=2).items():
        monkeypatch.setenv(name, value)
    ids: list[str] = []
    try:
        assert main(argv) == 2  # the second array (shards 3, 4) is refused: one line
        assert "sbatch refused tasks 3..4" in capsys.readouterr().err  # the array held shards 3 and 4
        recorded = run.latest_jobs()
        assert sorted(recorded) == [0, 1, 2], recorded  # the first array is queued (held): recorded at once
        ids += recorded.values()
        assert set(job_states(list(recorded.values()), timeout_s=15).values()) == {"PENDING"}

        monkeypatch.setenv("PATH", os.environ["PATH"].split(os.pathsep, 1)[1])  # Slurm accepts again
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert out.count("not submitted again") == 3  # shards 0-2 stay with their held jobs
        latest = run.latest_jobs()
        ids += [latest[3], latest[4]]
        assert [latest[i] for i in range(3)] == [recorded[i] for i in range(3)]
        assert latest[3].split("_")[0] not in {j.split("_")[0] for j in recorded.values()}
    finally:
        if ids:
            subprocess.run(["scancel", *sorted({j.split("_")[0] for j in ids})], timeout=30, check=False)
