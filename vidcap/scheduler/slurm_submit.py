"""A run's unfinished shards as Slurm job arrays (one task per shard), and waiting on them with a deadline.

Which job runs which shard is recorded in RUN/jobs.jsonl, and the resources in the run config, so that
`vidcap status` can show Slurm states and `vidcap resume` can resubmit with the same resources. A shard
whose job is still queued or running is never submitted twice.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from tqdm import tqdm

from vidcap.errors import UserError
from vidcap.tasks.spec import load_spec
from vidcap.run import RunDir
from vidcap.scheduler.placement import array_task_target
from vidcap.scheduler.preflight import check_before_submit
from vidcap.scheduler.resources import ResourceRequest, SlurmResources
from vidcap.scheduler.slurm import job_states, submit_array
from vidcap.scheduler.slurm_states import UNKNOWN, is_ended, is_live
from vidcap.scheduler.submission import Submission
from vidcap.scheduler.task import ShardTask

JOB_END_GRACE_S = 60.0  # a task that wrote its last marker still returns its result to submitit and exits
HEARTBEAT_S = 120.0  # a worker writes its stats after a batch, at most every 10 s (vidcap.worker)


def saved_resources(run: RunDir) -> SlurmResources | None:
    saved = run.load_config().get("submit", {}).get("resources")
    if saved is None:
        return None
    saved = dict(saved, setup=tuple(saved.get("setup", ())))
    return SlurmResources(**saved)


def active_shards(run: RunDir, shards: list[int]) -> dict[int, tuple[str, str]]:
    """Shards whose newest job is still queued or running: shard -> (job id, state)."""
    latest = run.latest_jobs()
    ids = {shard: latest[shard] for shard in shards if shard in latest}
    if not ids:
        return {}
    states = job_states(list(ids.values()))
    busy = {s: (j, states[j]) for s, j in ids.items() if is_live(states.get(j, UNKNOWN))}
    for shard, job_id in ids.items():
        # Slurm did not answer (or forgot the job): a shard whose worker wrote its stats lately is still
        # being worked on; submitting it again would only make a second task that the result lock refuses
        stats = run.read_stats(shard) if states.get(job_id) == UNKNOWN else None
        if stats and not stats.get("finished") and not stats.get("stopped"):
            age = time.time() - stats.get("updated_at", 0.0)
            if age < HEARTBEAT_S:
                busy[shard] = (job_id, f"working (Slurm state unknown; stats updated {age:.0f} s ago)")
    return busy


def submit_slurm(run: RunDir, shards: list[int], request: ResourceRequest) -> Submission:
    spec = load_spec(run)
    tp = spec.needs().ranks
    resources = request.resolve(ranks=tp, saved=saved_resources(run))
    busy = active_shards(run, shards)
    for shard, (job_id, state) in sorted(busy.items()):
        print(f"shard {shard}: still {state.lower()} as job {job_id}; not submitted again")
    todo = [s for s in shards if s not in busy]
    if not todo:
        print(f"{run.root}: nothing to submit")
        return Submission("slurm", [])
    check_before_submit(spec)
    config = run.load_config()
    config["submit"] = {"executor": "slurm", "resources": dataclasses.asdict(resources)}
    run.save_config(config)
    target = array_task_target(tp)
    run.logs_dir.mkdir(parents=True, exist_ok=True)

    def record(first: int, ids: list[str]) -> None:  # at once: a later array may fail, these still run
        run.record_jobs(dict(zip(todo[first:], ids)), "slurm")

    job_ids = submit_array(ShardTask(target), [(str(run.root), s) for s in todo], resources, run.logs_dir,
                           name=f"vidcap-{run.root.name}", accepted=record)
    arrays = sorted({j.split("_")[0] for j in job_ids}, key=int)
    print(f"submitted {len(todo)} shard tasks as Slurm job array(s) {', '.join(arrays)}"
          f"{f' (at most {resources.array_parallelism} at once per array)' if resources.array_parallelism else ''}; "
          f"follow with `vidcap status {run.root}`")
    return Submission("slurm", todo, job_ids=job_ids)


def wait_slurm(run: RunDir, submission: Submission, timeout_s: float | None, poll_s: float = 2.0) -> None:
    """Wait until every submitted shard is done or its job has ended; never past `timeout_s`."""
    ids = dict(zip(submission.shards, submission.job_ids))
    end = time.monotonic() + timeout_s if timeout_s else float("inf")
    bar = tqdm(total=len(ids), desc="shards done", unit="shard", file=sys.stderr,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    warned_unknown = False
    try:
        while True:
            done = [s for s in ids if run.is_done(s)]
            bar.update(len(done) - bar.n)
            if len(done) == len(ids):
                _let_jobs_end(list(ids.values()), min(JOB_END_GRACE_S, max(end - time.monotonic(), 0.0)), poll_s)
                return
            pending = {s: j for s, j in ids.items() if s not in done}
            states = job_states(list(pending.values()), timeout_s=max(1.0, min(30.0, end - time.monotonic())))
            unknown = [j for j in pending.values() if states[j] == UNKNOWN]
            if unknown and not warned_unknown:
                warned_unknown = True  # a slow controller: the jobs may still run, so keep waiting
                print(f"\nSlurm did not answer about {len(unknown)} job(s) (e.g. {unknown[0]}); still waiting",
                      file=sys.stderr)
            if all(is_ended(states[j]) for j in pending.values()):
                time.sleep(poll_s)  # a marker written just before the job ended
                if all(run.is_done(s) for s in pending):
                    bar.update(len(ids) - bar.n)
                    return
                ended = ", ".join(f"shard {s}: {states[j]}" for s, j in sorted(pending.items())[:5])
                print(f"\n{len(pending)} shard task(s) ended unfinished ({ended}); "
                      f"`vidcap status {run.root}` shows why, `vidcap resume {run.root}` retries", file=sys.stderr)
                return
            if time.monotonic() >= end:
                raise UserError(f"gave up waiting after {timeout_s:.0f} s; the jobs go on: `vidcap status {run.root}`")
            time.sleep(poll_s)
    finally:
        bar.close()


def _let_jobs_end(job_ids: list[str], grace_s: float, poll_s: float) -> None:
    """Every shard is done: wait (a little) for the tasks to exit too, so that what comes next (a merge, a
    `vidcap status`, a new submission) sees ended jobs, not tasks still writing their submitit result."""
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        states = job_states(job_ids, timeout_s=max(end - time.monotonic(), 1.0))
        if not any(is_live(state) for state in states.values()):
            return
        time.sleep(min(poll_s, 0.5))
