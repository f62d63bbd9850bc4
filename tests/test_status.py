"""`vidcap status` at any size: counts of finished shards come from their markers (cached after the first
read), and the speed "so far" is rows over the time any shard ran, not one worker's speed."""

from __future__ import annotations

import json
import os
import time

from vidcap.cli import main
from vidcap.results import ResultWriter, read_results, result_rows
from vidcap.run import RunDir
from vidcap.status import format_status, shard_states
from worker_helpers import make_clips


def noop_run(tmp_path, clips: int, shards: int) -> RunDir:
    manifest = make_clips(tmp_path / "v", clips)
    assert main(["submit", str(manifest), "--run", str(tmp_path / "run"), "--engine", "noop", "--shards",
                 str(shards), "--prepare-only"]) == 0
    return RunDir.at(tmp_path / "run")


def test_speed_so_far_counts_shards_that_ran_side_by_side(tmp_path, capsys):
    """Two shards that each processed 100 rows in the same 100 s ran at 2 rows/s together; summing their
    seconds gave 1 row/s and an ETA twice too long."""
    run = noop_run(tmp_path, 8, 4)
    for index in (0, 1):
        run.write_stats(index, {"shard": index, "started_at": 1000.0, "updated_at": 1100.0, "seconds": 100.0,
                                "rows_ok": 100, "rows_error": 0, "stopped": True, "host": "elsewhere", "pid": 1})
    capsys.readouterr()
    text = format_status(run, shard_states(run))
    assert "speed     2.00 videos/s (so far)" in text, text


def test_finished_shards_are_counted_from_their_markers_once(tmp_path, capsys):
    run = noop_run(tmp_path, 6, 3)
    assert main(["resume", str(run.root)]) == 0  # local: every shard done
    marker = json.loads(run.done_path(1).read_text())
    assert (marker["ok"], marker["error"], marker["rows"]) == (2, 0, 2) and marker["processed"] == 2
    first = [(s.state, s.ok, s.error) for s in shard_states(run)]
    assert first == [("done", 2, 0)] * 3 and run.status_cache_path.exists()
    # a shard reopened and finished again with an error: its marker changes, the cache follows it
    key = read_results(run, 1).column("key")[0].as_py()
    with ResultWriter(run, 1) as writer:
        writer.append(result_rows([{"key": key, "status": "error", "error": "late"}]))
    run.mark_done(1, {**marker, "ok": 1, "error": 1})
    assert [(s.ok, s.error) for s in shard_states(run)] == [(2, 0), (1, 1), (2, 0)]


def _settle(run: RunDir) -> None:
    """Date the done folder 10 s back, as if its last marker had been written a while before this listing."""
    import os

    stamp = os.stat(run.done_dir).st_mtime_ns - 10_000_000_000
    os.utime(run.done_dir, ns=(stamp, stamp))


def test_an_unchanged_done_folder_is_trusted_and_any_change_in_it_is_seen(tmp_path, capsys):
    """The cache skips statting markers while the done folder is unchanged since a settled listing; a marker
    replaced, written or removed after it (each a rename or unlink in that folder) must still show at once."""
    from vidcap.status import _DoneCache

    run = noop_run(tmp_path, 6, 3)
    assert main(["resume", str(run.root)]) == 0
    marker = json.loads(run.done_path(1).read_text())
    _settle(run)
    shard_states(run)  # a listing taken 10 s after the folder last changed
    assert _DoneCache(run).fast  # trusted: no marker is statted
    assert [(s.state, s.ok, s.error) for s in shard_states(run)] == [("done", 2, 0)] * 3
    run.mark_done(1, {**marker, "ok": 1, "error": 1})  # replaced right after the trusted listing
    assert not _DoneCache(run).fast
    assert [(s.ok, s.error) for s in shard_states(run)] == [(2, 0), (1, 1), (2, 0)]
    _settle(run)
    shard_states(run)
    run.clear_done(2)  # reopened: no longer done, and not counted as done from the cache
    states = shard_states(run)
    assert [s.state == "done" for s in states] == [True, True, False] and states[1].ok == 1
    run.mark_done(2, {**marker, "ok": 0, "error": 2})  # a newly written marker
    assert [(s.state, s.ok, s.error) for s in shard_states(run)] == [("done", 2, 0), ("done", 1, 1), ("done", 0, 2)]
    text = format_status(run, shard_states(run))
    assert "ok 3  error 3" in text, text


def test_a_listing_in_the_same_second_as_a_change_is_not_trusted(tmp_path, capsys, monkeypatch):
    """A marker written in the same clock tick as the listing leaves the folder's mtime as listed: such a
    listing is never trusted, so the next status stats every marker and sees the new one."""
    from vidcap.status import _DoneCache

    run = noop_run(tmp_path, 4, 2)
    assert main(["resume", str(run.root)]) == 0
    changed = os.stat(run.done_dir).st_mtime_ns
    with monkeypatch.context() as clock:  # listed 1 s after the last change, however slow this machine is
        clock.setattr(time, "time_ns", lambda: changed + 1_000_000_000)
        shard_states(run)
    assert not _DoneCache(run).fast  # not settled: the next status stats every marker
    _settle(run)
    shard_states(run)
    assert _DoneCache(run).fast  # listed over 2 s after the last change: trusted


def test_bulk_totals_equal_per_shard_totals_and_cold_equals_warm(tmp_path, capsys):
    """Finished shards are summed as columns and idle shards kept as indices; the table must read exactly as
    the one built from one ShardState per shard, whether the markers were read now (no cache), checked
    against the cache, or taken from a trusted cache; and a torn cache file is rebuilt, never trusted."""
    from vidcap.status import _DoneCache, _load_cache, run_status

    run = noop_run(tmp_path, 12, 6)
    assert main(["resume", str(run.root)]) == 0
    marker = json.loads(run.done_path(0).read_text())
    run.mark_done(1, {**marker, "ok": 1, "error": 1, "flags": {"too_short": 1}, "spent": {"cost_usd": 0.25,
                      "prompt_tokens": 10, "generated_tokens": 3}})
    run.mark_done(2, {**marker, "flags": {"repeated": 2, "too_short": 1}, "spent": {"cost_usd": 0.125}})
    run.clear_done(3)  # reopened: its results and stats stay, so it is described one by one
    run.clear_done(5)
    for name in ("results", "stats"):  # shard 5: nothing at all yet (idle)
        for path in (run.root / name).glob("shard-00005*"):
            path.unlink()
    run.status_cache_path.unlink(missing_ok=True)

    def tables() -> tuple[str, str]:
        report = run_status(run)
        assert len(report.done.index) == 4 and report.idle == [5] and [s.index for s in report.shards] == [3]
        return format_status(run, report), format_status(run, report, show_all=True)

    cold = tables()
    per_shard = format_status(run, shard_states(run)), format_status(run, shard_states(run), show_all=True)
    assert cold == per_shard
    assert "ok 9  error 1" in cold[0] and "done 4" in cold[0] and "not submitted 1" in cold[0], cold[0]
    assert "flags     too_short 2  repeated 2" in cold[0] and "$0.3750 estimated" in cold[0], cold[0]
    assert "\n     3  stopped" in cold[0] and "\n     5  not submitted" in cold[0] and "\n     0  done" not in cold[0]
    assert "\n     0  done" in cold[1]
    assert tables() == cold  # markers checked against the cache just written
    _settle(run)
    tables()
    assert _DoneCache(run).fast and tables() == cold  # the trusted cache: no marker read or statted
    run.status_cache_path.write_bytes(run.status_cache_path.read_bytes()[:-5] + b"xxxxx")  # torn
    assert _load_cache(run.status_cache_path)[0] is None and not _DoneCache(run).fast
    assert tables() == cold


def test_listings_count_only_the_run_s_own_files(tmp_path):
    """Shard indices from one regex pass over a folder's names: temporary files, locks and strangers aside."""
    from vidcap.run import _indices

    run = RunDir.at(tmp_path)
    run.results_dir.mkdir(parents=True)
    names = ["shard-00001.upto-0003.parquet", "shard-00002.log-0000.arrows", "shard-00003.lock",
             ".shard-00004.upto-0001.parquet.tmp", "shard-x.log-1.arrows", "shard-00006.json", "shard-00007.json.tmp",
             "shard-00008", "notes\nshard-00009.json"]
    for name in names:
        (run.results_dir / name).write_text("")
    assert run.result_shards() == {1, 2}
    assert _indices(run.results_dir, ".json") == {6} and _indices(run.results_dir, "") == {8}


def test_status_of_a_finished_run_imports_neither_pyarrow_nor_numpy(tmp_path, capsys):
    """Finished shards are counted from their markers and the task is described without building its
    schema: a fresh `vidcap status` process loads no pyarrow (a tenth of a cold status at 100,000 shards)."""
    import subprocess
    import sys

    run = noop_run(tmp_path, 4, 2)
    assert main(["resume", str(run.root)]) == 0
    code = ("import sys; from vidcap.cli import main; code = main(['status', sys.argv[1]]); "
            "print(sorted(m for m in ('pyarrow', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(run.root)], capture_output=True, text=True, check=True)
    assert "done 2" in out.stdout and out.stdout.rstrip().endswith("[]"), out.stdout + out.stderr


def test_status_of_an_api_run_does_not_import_the_api_client(tmp_path, monkeypatch):
    """An API run is described from its config: the openai client (about 1 s to import) loads only when
    requests go out."""
    import subprocess
    import sys

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    manifest = make_clips(tmp_path / "v", 2)
    assert main(["submit", str(manifest), "--run", str(tmp_path / "run"), "--engine", "openai", "--model", "gpt-4o",
                 "--shards", "1", "--prepare-only"]) == 0
    code = ("import sys; from vidcap.cli import main; code = main(['status', sys.argv[1]]); "
            "print(sorted(m for m in ('openai', 'httpx2', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         check=True)
    assert "engine openai:gpt-4o" in out.stdout and out.stdout.rstrip().endswith("[]"), out.stdout + out.stderr


def test_markers_read_by_threads_come_back_as_read_one_by_one(tmp_path, monkeypatch):
    """Markers out of the page cache are read by a pool of threads: same summaries, same order, a marker
    removed in between reads as gone, and a torn one as {}."""
    import os

    import vidcap.status as status

    run = RunDir.at(tmp_path)
    for index in range(40):
        run.mark_done(index, {"rows": 1, "ok": index % 2, "error": 1 - index % 2, "finished_at": 10.0 + index})
    run.done_path(7).write_text('{"ok": 1, "err')  # torn
    markers = [(index, f"shard-{index:05d}") for index in range(41)]  # 40: gone
    monkeypatch.setattr(status, "READ_CHUNK", 3)
    folder = os.open(run.done_dir, os.O_RDONLY)
    try:
        alone = status._read_markers(markers, folder, threads=False)
        pooled = status._read_markers(markers, folder, threads=True)
    finally:
        os.close(folder)
    assert pooled == alone and [i for i, _ in alone] == list(range(41))
    assert alone[40][1] is None and alone[7][1][2] == {} and alone[8][1][2]["ok"] == 0
    assert alone[3][1][2] == {"rows": 1, "ok": 1, "error": 0, "finished_at": 13.0}
