"""`vidcap status` at any size: counts of finished shards come from their markers (cached after the first
read), and the speed "so far" is rows over the time any shard ran, not one worker's speed."""

from __future__ import annotations

import json

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
