"""`vidcap caption` with the PLLaVA engine on the real Slurm test cluster: a job array over the tiny PLLaVA
checkpoint (engine chosen from its config), a broken video mid-batch, every caption on its own row."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from vidcap.cli import main
from vidcap.run import RunDir
from vidcap.fixtures.tiny_models import make_tiny_model
from worker_helpers import make_clips

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_job_env")]


@pytest.mark.timeout(900)
def test_pllava_caption_on_slurm_with_a_broken_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_tiny_model(tmp_path / "tiny-pllava", family="pllava")
    manifest = make_clips(tmp_path / "v", 6, broken={1: "truncated"})
    out, run = tmp_path / "out.csv", RunDir.at(tmp_path / "run")
    common = ["--model", str(model), "--num-frames", "4", "--pooling-shape", "2-2-2", "--lora-alpha", "4",
              "--max-new-tokens", "8", "--resize", "64"]
    try:
        code = main(["caption", str(manifest), "-o", str(out), "--run", str(run.root), "--shards", "2",
                     "--batch-size", "3", "--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "3",
                     "--time", "15", "--wait-timeout", "800", *common])
    finally:
        jobs = {j.split("_")[0] for j in run.latest_jobs().values()} if run.exists() else set()
        if jobs:
            subprocess.run(["scancel", *sorted(jobs)], timeout=30, check=False)
    printed = capsys.readouterr().out
    assert code == 0 or "1 failed" in printed, printed
    assert "6 rows: 5 captioned, 1 failed" in printed, printed
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(6)]
    assert rows[1]["status"] == "error" and rows[1]["error"] and not rows[1]["text"]
    assert all(r["status"] == "ok" and r["text"] for i, r in enumerate(rows) if i != 1)
    assert json.loads((run.root / "config.json").read_text())["engine"]["name"] == "pllava"
    assert all(run.read_stats(i)["finished"] for i in range(2))

    # the same captions as this machine's local executor gives for each good video alone, row by row
    good = tmp_path / "good.csv"
    good.write_text("path\n" + "".join(f"{tmp_path / 'v' / r['path']}\n" for i, r in enumerate(rows) if i != 1))
    alone = tmp_path / "alone.csv"
    main(["caption", str(good), "-o", str(alone), "--batch-size", "1", *common])
    by_name = {Path(r["path"]).name: r["text"] for r in csv.DictReader(open(alone, encoding="utf-8"))}
    for i, row in enumerate(rows):
        if i != 1:
            assert row["text"] == by_name[row["path"]], (i, row["text"], by_name[row["path"]])
