"""`vidcap motion` end to end on the shared run machinery: local executor and a real Slurm CPU array, each
with a broken video that is an error row, then fixed and picked up by `vidcap resume`.

Clips are generated with known camera motion (vidcap.fixtures.motion_clips), small (192x108, 30 frames), so the
labels are checked against the truth, not just for presence.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.cli import main
from vidcap.motion import motion_label
from vidcap.fixtures.motion_clips import ClipSpec, write_clip
from vidcap.run import RunDir

SPECS = [
    ClipSpec(name="pan", width=192, height=108, frames=30, scene="texture:1", dx=0.5),
    ClipSpec(name="all3", width=192, height=108, frames=30, scene="photo:coffee.png", dx=-0.45, dy=0.4, zoom=1.8),
    ClipSpec(name="still", width=108, height=192, frames=30, scene="photo:astronaut.png", objects=1),
    ClipSpec(name="tilt", width=108, height=192, frames=30, scene="texture:4", dy=-0.6, jitter=0.003),
    ClipSpec(name="cut", width=192, height=108, frames=30, scene="texture:3", dx=0.3, cut_at=0.5),
    ClipSpec(name="zoomout", width=192, height=108, frames=30, scene="photo:chelsea.png", zoom=0.55),
]
BROKEN = ClipSpec(name="late", width=192, height=108, frames=30, scene="texture:9", dy=0.5)


def make_manifest(folder: Path) -> tuple[Path, dict[str, str]]:
    """Clips of known motion and a truncated one (fixed later); the manifest has an extra `id` column."""
    (folder / "v").mkdir(parents=True)
    truth = {}
    rows = []
    for n, spec in enumerate(SPECS):
        write_clip(spec, folder / "v" / f"{spec.name}.mp4")
        truth[f"v/{spec.name}.mp4"] = spec.label
        rows.append({"path": f"v/{spec.name}.mp4", "id": f"{n:03d}"})
    whole = write_clip(BROKEN, folder / "whole.mp4").read_bytes()
    (folder / "v" / "late.mp4").write_bytes(whole[: len(whole) // 3])
    rows.append({"path": "v/late.mp4", "id": "099"})
    manifest = folder / "m.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "id"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, truth


def fix_broken(folder: Path) -> None:
    (folder / "whole.mp4").replace(folder / "v" / "late.mp4")


def vidcap(*argv: Any) -> int:
    return main([str(a) for a in argv])


def check_output(path: Path, truth: dict[str, str], broken_fixed: bool) -> None:
    table = pq.read_table(path)
    assert sorted(table["path"].to_pylist()) == sorted([*truth, "v/late.mp4"])  # every row once
    assert table.schema.field("cmotion_dx").type == pa.float64()
    assert table.schema.field("cmotion_points").type == pa.int64()
    rows = {r["path"]: r for r in table.to_pylist()}
    assert rows["v/pan.mp4"]["id"] == "000"  # manifest columns kept as they were
    for path, label in truth.items():
        row = rows[path]
        assert (row["status"], row["cmotion"]) == ("ok", label), row
        if label == "unclassified":
            assert row["cmotion_dx"] is None and row["cmotion_reason"]
        else:
            assert row["cmotion"] == motion_label(row["cmotion_dx"], row["cmotion_dy"], row["cmotion_zoom"])
            assert row["cmotion_points"] >= 12 and 0 < row["cmotion_confidence"] <= 1
    late = rows["v/late.mp4"]
    if broken_fixed:
        assert (late["status"], late["cmotion"]) == ("ok", BROKEN.label)
    else:
        assert late["status"] == "error" and late["error"].startswith("truncated or corrupt")
        assert late["cmotion"] is None and late["cmotion_dx"] is None


def test_motion_local_run_merge_relabel_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, truth = make_manifest(tmp_path)
    out = tmp_path / "out.parquet"
    assert vidcap("motion", manifest, "--output", out, "--shards", 3) == 0  # failed rows are reported, not pending
    printed = capsys.readouterr().out
    assert "7 rows: 6 labelled, 1 failed" in printed and "truncated or corrupt x1" in printed
    check_output(out, truth, broken_fixed=False)

    run = RunDir.at(tmp_path / "out.run")
    assert run.load_config()["task"]["name"] == "motion"
    assert run.load_config()["engine"]["name"] == "motion"
    # the same command again: the run is continued, not redone, and a changed threshold is refused
    assert vidcap("motion", manifest, "--output", out, "--threshold", "0.1") == 2
    assert "other settings" in capsys.readouterr().err

    fix_broken(tmp_path)
    assert vidcap("resume", run.root) == 0
    assert vidcap("merge", run.root, "--output", out) == 0
    check_output(out, truth, broken_fixed=True)

    # re-threshold without rerunning: the labels the formula gives at 0.1 from the same numbers
    csv_out = tmp_path / "out.csv"
    assert vidcap("merge", run.root, "--output", csv_out) == 0
    assert vidcap("motion-relabel", csv_out, "--threshold", "0.1") == 0
    with open(csv_out, newline="") as f:
        for row in csv.DictReader(f):
            if row["cmotion_dx"]:
                numbers = (float(row["cmotion_dx"]), float(row["cmotion_dy"]), float(row["cmotion_zoom"]))
                assert row["cmotion"] == motion_label(*numbers, threshold=0.1)
            else:
                assert row["cmotion"] == "unclassified"


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_job_env")
def test_motion_slurm_cpu_array_with_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, truth = make_manifest(tmp_path)
    out = tmp_path / "out.parquet"
    run = RunDir.at(tmp_path / "out.run")
    slurm = ["--executor", "slurm", "--cpus-per-task", 1, "--mem-gb", 1, "--wait-timeout", 300]
    try:
        code = vidcap("motion", manifest, "--output", out, "--shards", 3, *slurm)
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert "7 rows: 6 labelled, 1 failed" in printed
        check_output(out, truth, broken_fixed=False)
        jobs = run.latest_jobs()
        assert len(jobs) == 3 and len({j.split("_")[0] for j in jobs.values()}) == 1, jobs  # one array

        fix_broken(tmp_path)
        assert vidcap("resume", run.root, "--wait", "--wait-timeout", 300) == 0
        printed = capsys.readouterr().out
        assert "reopened" in printed
        assert vidcap("merge", run.root, "--output", out) == 0
        check_output(out, truth, broken_fixed=True)
        assert vidcap("status", run.root) == 0
        sys.stdout.write(capsys.readouterr().out)
    finally:
        ids = {j.split("_")[0] for j in run.latest_jobs().values()} if run.root.exists() else set()
        if ids:
            subprocess.run(["scancel", *sorted(ids)], timeout=30, check=False)


def test_motion_refuses_bad_flags_before_writing_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,id\nv/a.mp4,1\n")
    for flags, message in [(["--threshold", "0"], "--threshold must be a positive fraction"),
                           (["--steps", "2"], "--steps must be at least 4"),
                           (["--short-side", "10"], "--short-side must be at least 32"),
                           (["--path-column", "video"], "no 'video' column")]:
        assert vidcap("motion", manifest, "--output", tmp_path / "out.csv", *flags) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
