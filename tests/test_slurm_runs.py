"""Whole runs on the real test cluster, through the commands users type: `vidcap caption/submit/status/resume`
with `--executor slurm`, the plain sbatch template with the real `vidcap run-shard`.

Tasks are made long enough to kill with the no-op engine's hidden `--noop-latency` (seconds per batch);
videos are tiny real files (tests/worker_helpers.make_clips). Every wait has a deadline, and every job a
test submitted is cancelled when it ends, passed or not. The end of every run is checked the same way
(`check_every_key_once`): a completion marker per shard, each manifest key exactly once in the merged output
with status ok, and each key exactly once in the raw result store too (a kill loses the batch in flight,
it never makes a row be written twice).
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import pytest
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from worker_helpers import make_clips

from vidcap.cli import main
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.scheduler.slurm import FINAL_STATES, job_folder, job_states

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_job_env")]

REPO = Path(__file__).resolve().parent.parent
# one CPU and 512 MiB per task (16 task slots on the test node's 2 real cores), frames at their own size
SLURM = ["--engine", "noop", "--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "0.5", "--resize", "0",
         "--readers", "1", "--num-frames", "2"]
ROW = re.compile(r"^\s*(\d+)\s{2}(\S+(?: submitted)?)\s+(\S+)\s+(\S+)\s+\d+")


# ---------------------------------------------------------------------------------------------- helpers
class Cli:
    """`vidcap ARGS` in this process; returns what it printed (stdout) and fails the test on a non-zero exit."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: Any, ok: bool = True) -> str:
        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        sys.stdout.write(out)  # shown by pytest when the test fails
        if ok:
            assert code == 0, f"vidcap {' '.join(map(str, argv))} exited {code}:\n{out}\n{err[-2000:]}"
        return out


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


@pytest.fixture
def cleanup() -> Any:
    """Register run folders (and extra job ids); every job of theirs is cancelled when the test ends."""
    runs: list[RunDir] = []
    extra: list[str] = []

    def register(run: RunDir | None = None, job_id: str | None = None) -> None:
        if run is not None:
            runs.append(run)
        if job_id is not None:
            extra.append(job_id)

    yield register
    ids = set(extra)
    for run in runs:
        ids |= {j.split("_")[0] for j in run.latest_jobs().values()} | set(_all_jobs(run))
    if ids:
        subprocess.run(["scancel", *sorted({i.split("_")[0] for i in ids})], timeout=30, check=False)


def note(text: str) -> None:
    """A figure or a choice worth seeing with `pytest -s` (capsys would swallow a print)."""
    sys.__stderr__.write(f"\n[test_slurm_runs] {text}\n")


def wait_until(predicate: Callable[[], Any], deadline_s: float, what: str, poll_s: float = 0.5) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(poll_s)


def _all_jobs(run: RunDir) -> list[str]:
    """Every job id jobs.jsonl holds, oldest first (latest_jobs keeps only the newest per shard)."""
    if not run.jobs_path.exists():
        return []
    return [json.loads(line)["job_id"] for line in run.jobs_path.read_text().splitlines() if line.strip()]


def _job_lines(run: RunDir) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.jobs_path.read_text().splitlines() if line.strip()]


def new_run(tmp_path: Path, cli: Cli, cleanup: Any, clips: int, shards: int, *args: Any,
            command: str = "submit") -> tuple[RunDir, list[str]]:
    """Tiny videos, then `vidcap submit MANIFEST --run RUN --shards N ... --executor slurm`; (run, keys)."""
    manifest = make_clips(tmp_path / "videos", clips)
    run = RunDir.at(tmp_path / "run")
    cleanup(run)
    out = cli(command, manifest, "--run", run.root, "--shards", shards, *SLURM, *args)
    assert "submitted" in out, out
    keys = [f"clip_{i:03d}.mp4" for i in range(clips)]
    return run, keys


def slurm_state(job_id: str) -> str:
    return job_states([job_id], timeout_s=15)[job_id]


def worker_pid(run: RunDir, shard: int, job_id: str) -> int | None:
    """Pid of the process captioning `shard` for job `job_id` (from its stats file), once it has written a
    batch; None before. The pid is checked against the job (a stats file may be an older attempt's)."""
    stats = run.read_stats(shard)
    if not stats or stats.get("finished") or stats.get("batches", 0) < 1:
        return None
    pid = int(stats["pid"])
    try:
        env = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
    except OSError:
        return None
    array, _, task = job_id.partition("_")
    mine = (env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")) == (array, task) if task \
        else env.get("SLURM_JOB_ID") == job_id
    return pid if mine else None


def status_rows(text: str) -> dict[int, tuple[str, str, str]]:
    """`vidcap status` table -> {shard: (state, job id, Slurm state)}."""
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows[int(m.group(1))] = (m.group(2), m.group(3), m.group(4))
    return rows


def all_done(run: RunDir) -> bool:
    return all(run.is_done(i) for i in range(run.num_shards))


def wait_ended(job_ids: list[str], deadline_s: float = 60) -> dict[str, str]:
    """Wait until Slurm has ended these jobs (processes gone: no COMPLETING); their final states."""
    return wait_until(lambda: (s := job_states(job_ids, timeout_s=15)) and
                      all(v in FINAL_STATES for v in s.values()) and s, deadline_s, f"{job_ids} to end")


def check_every_key_once(run: RunDir, keys: list[str], cli: Cli) -> None:
    """Markers for every shard; each key once and ok in the merged output and in the raw result store."""
    shards = run.num_shards
    assert [i for i in range(shards) if not run.is_done(i)] == []
    sizes = run.load_config()["shards"]["sizes"]
    for i in range(shards):
        assert json.loads(run.done_path(i).read_text())["rows"] == sizes[i]
    merged = run.root / "final.parquet"
    out = cli("merge", run.root, "--output", merged)
    assert f"{len(keys)} rows: {len(keys)} ok, 0 error" in out, out
    table = pq.read_table(merged)
    assert sorted(table["path"].to_pylist()) == sorted(keys)
    assert set(table["status"].to_pylist()) == {"ok"}
    assert all(t.startswith("[noop engine") for t in table["text"].to_pylist())
    raw = collections.Counter()
    for i in range(shards):
        results = read_results(run, i)
        assert set(results["status"].to_pylist()) == {"ok"}, f"shard {i}"
        raw.update(results["key"].to_pylist())
    assert sorted(raw) == sorted(keys) and set(raw.values()) == {1}, "each key written exactly once"


def task_logs(run: RunDir) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(run.logs_dir.rglob("*_log.*")))


# ---------------------------------------------------------------------------------------------- tests
def test_caption_runs_one_task_per_shard_and_merges(tmp_path: Path, cli: Cli, cleanup: Any) -> None:
    """`vidcap caption --executor slurm`: one array, a task per shard, waits, merges; status says done."""
    run_root = tmp_path / "run"
    manifest = make_clips(tmp_path / "videos", 10)
    cleanup(RunDir.at(run_root))
    start = time.monotonic()
    out = cli("caption", manifest, "--run", run_root, "--output", tmp_path / "captions.csv", "--shards", 4,
              "--batch-size", 2, "--wait-timeout", 120, *SLURM, "--time", 5)
    elapsed = time.monotonic() - start
    run = RunDir.at(run_root)
    lines = _job_lines(run)
    assert sorted(line["shard"] for line in lines) == [0, 1, 2, 3]
    assert len({line["job_id"].split("_")[0] for line in lines}) == 1, "one array"
    assert {slurm_state(line["job_id"]) for line in lines} == {"COMPLETED"}
    assert f"{tmp_path / 'captions.csv'}: 10 rows: 10 captioned, 0 failed, 0 remaining" in out
    check_every_key_once(run, [f"clip_{i:03d}.mp4" for i in range(10)], cli)
    for i in range(4):  # each shard ran in its own task, on the cluster
        stats = run.read_stats(i)
        assert stats["finished"] and stats["rows_ok"] == run.load_config()["shards"]["sizes"][i]
    status = cli("status", run.root, "--all")
    assert "done 4  running 0  pending 0  failed 0" in status
    assert {v[0] for v in status_rows(status).values()} == {"done"}
    assert "nothing to submit" in cli("resume", run.root)
    note(f"caption of 10 videos in 4 array tasks: {elapsed:.1f} s")


def test_status_kills_and_resume(tmp_path: Path, cli: Cli, cleanup: Any) -> None:
    """Status shows pending/running from Slurm; a task scancel'ed and one killed with kill -9 show as failed
    with their log tails; resume submits exactly those two (the running shard is refused), a second resume
    submits nothing, and the run finishes with every key once."""
    # 3 shards x 10 videos, 3 s per video: 30 s a shard; at most 2 tasks at once, so shard 2 waits
    run, keys = new_run(tmp_path, cli, cleanup, 30, 3, "--batch-size", 1, "--noop-latency", 3, "--time", 5,
                        "--array-parallelism", 2)
    jobs = run.latest_jobs()
    pids = wait_until(lambda: all(p := [worker_pid(run, s, jobs[s]) for s in (0, 1)]) and p, 60,
                      "shards 0 and 1 to write a batch")
    status = status_rows(cli("status", run.root))
    assert status[0][0] == status[1][0] == "running" and status[0][2] == "RUNNING"
    assert status[2][0] == "pending" and status[2][2] == "PENDING", status

    subprocess.run(["scancel", jobs[0]], check=True, timeout=30)
    os.kill(pids[1], signal.SIGKILL)
    ended = wait_ended([jobs[0], jobs[1]])
    assert ended == {jobs[0]: "CANCELLED", jobs[1]: "FAILED"}, ended
    wait_until(lambda: worker_pid(run, 2, jobs[2]), 60, "shard 2 to start in the freed slot")
    text = cli("status", run.root)
    status = status_rows(text)
    assert [status[i][0] for i in (0, 1, 2)] == ["failed", "failed", "running"], text
    assert "failed 2" in text
    tail0 = text.split(f"shard 0 (job {jobs[0]}, CANCELLED): last lines of its log")[1]
    tail0 = tail0.split("\nshard 1")[0]  # slurmstepd's "CANCELLED AT", submitit's SIGTERM, srun's "Killed"
    assert any(word in tail0 for word in ("CANCELLED", "SIGTERM", "Killed")), tail0
    tail1 = text.split(f"shard 1 (job {jobs[1]}, FAILED): last lines of its log")[1]
    assert "Killed" in tail1, tail1  # srun: error: localhost: task 0: Killed

    before = _job_lines(run)
    out = cli("resume", run.root)
    assert f"shard 2: still running as job {jobs[2]}; not submitted again" in out
    assert "submitted 2 shard tasks" in out
    added = _job_lines(run)[len(before):]
    assert sorted(line["shard"] for line in added) == [0, 1]
    # resume merged and wrote what remains: the rows not ok yet, none of the ok ones
    merged = pq.read_table(run.root / "merged.parquet")
    remaining = pq.read_table(run.root / "remaining.parquet")
    ok = {k for k, s in zip(merged["path"].to_pylist(), merged["status"].to_pylist()) if s == "ok"}
    assert 0 < len(ok) < 30 and set(remaining["path"].to_pylist()) == set(keys) - ok
    out = cli("resume", run.root)
    assert "nothing to submit" in out and "shard tasks" not in out, out
    assert len(_job_lines(run)) == len(before) + 2, "the second resume submitted nothing"
    for shard in (0, 1, 2):
        assert f"shard {shard}: still " in out

    wait_until(lambda: all_done(run), 120, "every shard to finish after resume", poll_s=1)
    check_every_key_once(run, keys, cli)
    latest = run.latest_jobs()
    assert set(wait_ended(list(latest.values())).values()) == {"COMPLETED"}
    for shard in (0, 1):  # the rerun did only what the killed task had not written
        stats = run.read_stats(shard)
        assert stats["rows_ok_before"] > 0 and stats["rows_ok_before"] + stats["rows_ok"] == 10


def test_time_limit_requeues_and_finishes(tmp_path: Path, cli: Cli, cleanup: Any) -> None:
    """--time 1 for shards that need ~40 s: USR2 comes 5-35 s into each run (signal delay 25 s, Slurm's 30 s
    check), the worker stops after its batch, submitit requeues the task, the rerun continues; `vidcap
    caption` waits through the requeues."""
    manifest = make_clips(tmp_path / "videos", 20)
    run = RunDir.at(tmp_path / "run")
    cleanup(run)
    start = time.monotonic()
    out = cli("caption", manifest, "--run", run.root, "--output", tmp_path / "out.parquet", "--shards", 2,
              "--batch-size", 1, "--noop-latency", 4, "--wait-timeout", 240, *SLURM, "--time", 1)
    elapsed = time.monotonic() - start
    assert "20 rows: 20 captioned" in out
    check_every_key_once(run, [f"clip_{i:03d}.mp4" for i in range(20)], cli)
    script = next(run.logs_dir.rglob("*_submission.sh")).read_text()
    assert "--signal=USR2@25" in script and "--time=1\n" in script
    for shard, job_id in run.latest_jobs().items():
        info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=15).stdout
        restarts = int(re.search(r"Restarts=(\d+)", info).group(1))
        assert restarts >= 1 and "JobState=COMPLETED" in info, info
        task_files = job_folder(run.logs_dir, job_id).glob(f"{job_id}_*_log.*")  # its array's folder
        logs = "\n".join(p.read_text(errors="replace") for p in task_files)
        # stopped between batches and requeued by submitit, every time; no process died of USR2
        assert logs.count("Exiting gracefully after preemption/timeout") == restarts
        assert "Requeued job" in logs and "resource_tracker" not in logs and "Traceback" not in logs
        note(f"shard {shard}: job {job_id} requeued {restarts} time(s)")
    note(f"2 shards of 40 s under a 1-minute limit: {elapsed:.1f} s")


def test_chaos_random_kills_then_resume_until_done(tmp_path: Path, cli: Cli, cleanup: Any) -> None:
    """8 shards; while they run, random tasks are scancel'ed or their worker killed with -9, and resume runs
    now and then (resubmitted tasks may be killed again); then resume until done. Every key exactly once,
    and no job ended other than COMPLETED except those killed (no second writer, no crash)."""
    seed = int(os.environ.get("VIDCAP_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    note(f"chaos seed {seed} (VIDCAP_CHAOS_SEED={seed} replays the choices)")
    run, keys = new_run(tmp_path, cli, cleanup, 64, 8, "--batch-size", 1, "--noop-latency", 2, "--time", 5)
    killed: dict[str, str] = {}
    kills = ["scancel", "kill-9"] * 3
    rng.shuffle(kills)
    chaos_end = time.monotonic() + 40
    while kills and time.monotonic() < chaos_end:
        time.sleep(rng.uniform(1.5, 4.0))
        latest = run.latest_jobs()
        live = {s: j for s, j in latest.items() if j not in killed and not run.is_done(s)}
        targets = [(s, j, pid) for s, j in sorted(live.items()) if (pid := worker_pid(run, s, j))]
        if not targets:
            continue
        shard, job_id, pid = rng.choice(targets)
        how = kills.pop()
        if how == "scancel":
            subprocess.run(["scancel", job_id], check=True, timeout=30)
        else:
            os.kill(pid, signal.SIGKILL)
        killed[job_id] = how
        note(f"{time.strftime('%X')} {how} shard {shard} (job {job_id}, pid {pid})")
        if rng.random() < 0.5:
            cli("resume", run.root)  # the killed one may not have ended yet: it is refused then
    assert len(killed) >= 4, f"only {len(killed)} kills landed (seed {seed})"

    deadline = time.monotonic() + 150
    resumes = 0
    while not all_done(run):
        assert time.monotonic() < deadline, f"seed {seed}: not done after the deadline; {cli('status', run.root)}"
        cli("resume", run.root)
        resumes += 1
        time.sleep(4)
    check_every_key_once(run, keys, cli)
    states = wait_ended(_all_jobs(run))
    others = {j: s for j, s in states.items() if s != "COMPLETED" and j not in killed}
    assert others == {}, f"seed {seed}: jobs that ended badly without being killed: {others}"
    assert "being written by another process" not in task_logs(run), "a shard had two live tasks at once"
    out = cli("resume", run.root)
    assert "every shard is done; nothing to submit" in out
    note(f"{len(killed)} kills, {len(_all_jobs(run))} jobs for 8 shards, {resumes} resumes after the chaos")


def test_plain_sbatch_template_with_the_real_worker(tmp_path: Path, cli: Cli, cleanup: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """slurm/caption_array.sbatch on a run made by `vidcap submit --prepare-only`, running the real
    `vidcap run-shard`; the time-limit signal (B:USR2, sent by hand) stops one task after its batch and
    the template requeues it; the rerun finishes the shard."""
    manifest = make_clips(tmp_path / "videos", 18)
    run = RunDir.at(tmp_path / "run")
    out = cli("submit", manifest, "--run", run.root, "--shards", 3, "--batch-size", 1, "--noop-latency", 1.5,
              *SLURM, "--prepare-only")
    assert "prepared" in out and not run.jobs_path.exists()
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # `vidcap`
    run.logs_dir.mkdir(parents=True, exist_ok=True)
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0-2", "--time=5", "--mem=500M", "--cpus-per-task=1",
         f"--output={run.logs_dir}/%A_%a.out", str(REPO / "slurm/caption_array.sbatch"), str(run.root)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    array = submitted.split(";")[0]
    cleanup(job_id=array)
    ids = [f"{array}_{i}" for i in range(3)]
    written = wait_until(lambda: (n := read_results(run, 1).num_rows) >= 2 and n, 60, "shard 1 to write 2 rows")
    subprocess.run(["scancel", "--batch", "--signal=USR2", ids[1]], check=True, timeout=30)
    wait_until(lambda: all_done(run), 120, "every shard done", poll_s=1)
    assert wait_ended(ids) == dict.fromkeys(ids, "COMPLETED")
    check_every_key_once(run, [f"clip_{i:03d}.mp4" for i in range(18)], cli)
    log1 = (run.logs_dir / f"{array}_1.out").read_text(errors="replace")
    assert "vidcap: SIGUSR2 from pid " in log1 and "stopping after the batch in flight" in log1
    assert "shard 1: stopped early (a rerun continues)" in log1
    assert "vidcap: shard 1 stopped at the time limit; requeued" in log1
    assert log1.count("shard 1: done:") == 1 and "Traceback" not in log1
    info = subprocess.run(["scontrol", "show", "job", ids[1]], capture_output=True, text=True, timeout=15).stdout
    assert "Restarts=1" in info
    assert run.read_stats(1)["rows_ok_before"] >= written  # the rerun continued from the results
    for i in (0, 2):
        log = (run.logs_dir / f"{array}_{i}.out").read_text(errors="replace")
        assert f"shard {i}: done: 6 ok, 0 error" in log and "requeued" not in log
