"""Split (deterministic, balanced, frozen) and the run-folder reducers (merge, remaining)."""

from __future__ import annotations

import csv
import io

import pyarrow.parquet as pq
import pytest

from vidcap.cli import main
from vidcap.errors import UserError
from vidcap.manifest.reduce_run import merge_run, remaining_run
from vidcap.manifest.split import load_shard, split
from vidcap.results import ResultWriter, read_results, result_rows
from vidcap.run import RunDir


def write_manifest(path, n, extra=""):
    rows = ["path,num_frames,note"] + [f'clips/{i:04d}.mp4,{i * 3},"a, ""quoted"" note {i}{extra}"' for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("rows, shards", [(10, 3), (7, 7), (100, 8), (1, 1)])
def test_split_is_balanced_complete_and_ordered(tmp_path, rows, shards):
    manifest = write_manifest(tmp_path / "m.csv", rows)
    run = RunDir.at(tmp_path / "run")
    result = split(manifest, run, shards=shards)
    sizes = [pq.read_metadata(run.shard_path(i)).num_rows for i in range(shards)]
    assert sizes == result.shard_sizes and sum(sizes) == rows and max(sizes) - min(sizes) <= 1
    paths = [p for i in range(shards) for p in load_shard(run, i).column("path").to_pylist()]
    assert paths == [f"clips/{i:04d}.mp4" for i in range(rows)]
    assert load_shard(run, 0).column_names == ["path", "num_frames", "note", "_row"]


def test_split_is_deterministic_and_rows_per_shard(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", 23)
    a, b = RunDir.at(tmp_path / "a"), RunDir.at(tmp_path / "b")
    split(manifest, a, rows_per_shard=5)
    split(manifest, b, rows_per_shard=5)
    assert a.num_shards == 5
    for i in range(5):
        assert load_shard(a, i).equals(load_shard(b, i))
    assert a.load_config()["manifest"]["fingerprint"].startswith("sha256:")
    assert a.load_config()["shards"]["sizes"] == [5, 5, 5, 4, 4]


def test_resplit_refused_unless_force_which_archives(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", 10)
    run = RunDir.at(tmp_path / "run")
    split(manifest, run, shards=2)
    assert split(manifest, run, shards=2).reused
    with ResultWriter(run, 0) as w:
        w.append(result_rows([{"key": "clips/0000.mp4", "status": "ok", "text": "kept"}]))
    with pytest.raises(UserError, match="split from 2 shards; use another --run, or --force"):
        split(manifest, run, shards=3)
    other = write_manifest(tmp_path / "other.csv", 10, extra="!")
    with pytest.raises(UserError, match=r"split from manifest .*m\.csv"):
        split(other, run, shards=2)
    assert main(["split", str(other), "--run", str(run.root), "--shards", "3", "--force"]) == 0
    assert run.num_shards == 3
    archived = list((run.root / "previous").glob("*/results/*"))
    assert archived, "the old results must be kept, not deleted"


def test_more_shards_than_rows_refused(tmp_path):
    with pytest.raises(UserError, match="--shards 5 is more than the 3 rows"):
        split(write_manifest(tmp_path / "m.csv", 3), RunDir.at(tmp_path / "r"), shards=5)


@pytest.fixture
def run_with_results(tmp_path):
    """10 rows in 3 shards; results with retries, an error that later succeeds and one that keeps failing."""
    run = RunDir.at(tmp_path / "run")
    split(write_manifest(tmp_path / "m.csv", 10), run, shards=3)
    k = [f"clips/{i:04d}.mp4" for i in range(10)]
    with ResultWriter(run, 0) as w:  # shard 0: rows 0-3
        w.append(result_rows([{"key": k[0], "status": "ok", "text": "first"}, {"key": k[1], "status": "error", "error": "truncated: moov atom not found"}]))
        w.append(result_rows([{"key": k[0], "status": "ok", "text": "second"}, {"key": k[1], "status": "ok", "text": "retried fine"}]))
        w.append(result_rows([{"key": k[2], "status": "ok", "text": "good"}]))
        w.append(result_rows([{"key": k[2], "status": "error", "error": "later failure"}]))
    with ResultWriter(run, 2) as w:  # shard 2: rows 7-9
        for attempt in range(3):
            w.append(result_rows([{"key": k[9], "status": "error", "error": f"not a video (attempt {attempt})"}]))
        w.append(result_rows([{"key": k[8], "status": "skipped", "error": "filtered"}]))
    return run, k


def test_merge_run(run_with_results, tmp_path):
    run, k = run_with_results
    counts = merge_run(run, tmp_path / "out.csv", caption_column="caption")
    rows = list(csv.DictReader(io.open(tmp_path / "out.csv", encoding="utf-8")))
    assert [r["path"] for r in rows] == k  # manifest order, each key once
    assert rows[0]["note"] == 'a, "quoted" note 0'  # manifest columns intact
    assert rows[0]["caption"] == "second"  # among equals the latest wins
    assert rows[1]["caption"] == "retried fine" and rows[1]["failures"] == "1"
    assert rows[2]["caption"] == "good" and rows[2]["status"] == "ok"  # ok beats a later error
    assert rows[9]["status"] == "error" and rows[9]["error"] == "not a video (attempt 2)" and rows[9]["failures"] == "3"
    assert rows[8]["status"] == "skipped"
    assert rows[4]["status"] == ""  # never run
    assert (counts.ok, counts.error, counts.skipped, counts.pending) == (3, 1, 1, 5)
    merge_run(run, tmp_path / "out.parquet", caption_column="caption")
    assert pq.read_table(tmp_path / "out.parquet").column("path").to_pylist() == k


def test_remaining_run_and_max_attempts(run_with_results, tmp_path, capsys):
    run, k = run_with_results
    remaining_run(run, tmp_path / "rem.csv")
    rows = list(csv.DictReader(io.open(tmp_path / "rem.csv", encoding="utf-8")))
    assert [r["path"] for r in rows] == [k[i] for i in (3, 4, 5, 6, 7, 8, 9)]
    assert list(rows[0]) == ["path", "num_frames", "note"] and rows[0]["note"] == 'a, "quoted" note 3'
    assert main(["remaining", str(run.root), "-o", str(tmp_path / "rem2.csv"), "--max-attempts", "3"]) == 0
    assert "1 rows left out after failing 3 times" in capsys.readouterr().out
    rows = list(csv.DictReader(io.open(tmp_path / "rem2.csv", encoding="utf-8")))
    assert k[9] not in [r["path"] for r in rows] and len(rows) == 6


def test_merge_refuses_caption_column_clash(run_with_results, tmp_path):
    run, _ = run_with_results
    with pytest.raises(UserError, match=r"already has column\(s\) \['note'\].*"):
        merge_run(run, tmp_path / "o.csv", caption_column="note")


def test_split_makes_every_shard_durable_before_its_config(tmp_path, monkeypatch):
    """After a power loss the config must not outlive its shards: each shard file is fsynced (and renamed
    into place) before config.json is."""
    import os as os_module

    from vidcap import durable

    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(10)))
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os_module.fsync, os_module.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os_module.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    run = RunDir.at(tmp_path / "run")
    split(manifest, run, shards=4)
    config_at = events.index(("replace", str(run.config_path)))
    for i in range(4):
        shard = str(run.shard_path(i))
        synced = [n for n, (what, name) in enumerate(events) if what == "fsync" and name.startswith(
            str(run.shards_dir / f".{run.shard_path(i).name}."))]
        assert synced and synced[0] < config_at, f"shard {i} was not fsynced before the config"
        assert events.index(("replace", shard)) < config_at
    assert ("fsync", str(run.shards_dir)) in events[:config_at]  # the renames too


@pytest.mark.parametrize("syncfs_works", [True, False])
def test_a_large_split_is_made_durable_by_one_syncfs_before_any_rename(tmp_path, monkeypatch, syncfs_works):
    """From SYNCFS_MIN_FILES shards on, one syncfs(2) of the file system replaces an fsync per shard file; it
    comes after every shard was written and before the first rename. Where syncfs is missing or fails,
    every shard file is fsynced instead."""
    import os as os_module

    from vidcap import durable

    count = durable.SYNCFS_MIN_FILES + 3
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(count)))
    run = RunDir.at(tmp_path / "run")
    events: list[tuple[str, int]] = []
    real_syncfs, real_fsync, real_replace = durable.syncfs, os_module.fsync, os_module.replace

    def temporaries() -> int:
        return sum(1 for name in os_module.listdir(run.shards_dir) if durable.is_temporary(name))

    def syncfs(path) -> bool:
        events.append(("syncfs", temporaries()))
        return real_syncfs(path) if syncfs_works else False

    def fsync(fd: int) -> None:
        if os_module.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            events.append(("fsync", 0))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", 0))
        real_replace(src, dst)

    monkeypatch.setattr(durable, "syncfs", syncfs)
    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    split(manifest, run, shards=count)
    first_rename = [what for what, _ in events].index("replace")
    assert events[0] == ("syncfs", count)  # every shard written, none renamed yet
    fsyncs = sum(1 for what, _ in events[:first_rename] if what == "fsync")
    assert fsyncs == (0 if syncfs_works else count)
    assert run.num_shards == count and load_shard(run, count - 1).num_rows == 1


def test_split_force_refuses_while_a_task_of_the_old_split_writes(tmp_path):
    """An old task still writing would compact old results into the new split: --force waits for it."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(10)))
    run = RunDir.at(tmp_path / "run")
    split(manifest, run, shards=2)
    with ResultWriter(run, 1) as writer:
        writer.append(result_rows([{"key": "v9.mp4", "status": "ok", "text": "x"}]))
        with pytest.raises(UserError, match=r"still writing \(shard-00001: pid \d+ on "):
            split(manifest, run, shards=5, force=True)
    assert run.num_shards == 2 and read_results(run, 1).num_rows == 1  # nothing was moved
    split(manifest, run, shards=5, force=True)  # the writer is gone
    assert run.num_shards == 5 and read_results(run, 1).num_rows == 0


def test_split_force_archives_the_job_records(tmp_path, slurm_cluster):
    """New shard numbers must not map to the old split's jobs: jobs.jsonl goes to the archive too (the job
    recorded here is long gone: Slurm does not know it)."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(10)))
    run = RunDir.at(tmp_path / "run")
    split(manifest, run, shards=2)
    run.record_jobs({0: "999999_0", 1: "999999_1"}, "slurm")
    split(manifest, run, shards=5, force=True)
    assert run.latest_jobs() == {}
    archived = list((run.root / "previous").glob("*/jobs.jsonl"))
    assert len(archived) == 1 and "999999_1" in archived[0].read_text()


def test_a_batch_refuses_one_target_twice_and_leaves_no_temporary_on_error(tmp_path):
    """Batch names its temporaries from the target plus one tag per batch: a target written twice would share
    one, so it is refused; an error leaves neither temporaries nor targets behind."""
    from vidcap.durable import Batch

    with pytest.raises(ValueError, match="written twice"):
        with Batch() as batch:
            batch.write(tmp_path / "a", lambda: b"1")
            batch.write(str(tmp_path / "a"), lambda: b"2")
    assert list(tmp_path.iterdir()) == []
    with Batch() as batch:
        batch.write(tmp_path / "a", lambda: b"1")
        batch.write(tmp_path / "b", lambda: b"2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"] and (tmp_path / "b").read_bytes() == b"2"
