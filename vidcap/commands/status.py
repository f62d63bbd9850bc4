"""`vidcap status` and `vidcap resume`: follow a run and finish it."""

from __future__ import annotations

import argparse

from vidcap.errors import UserError
from vidcap.run import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="table of shards, rows, throughput and ETA of a run (never blocks)")
    p.add_argument("run", help="run folder")
    p.add_argument("--all", action="store_true", help="list every shard, done ones too")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("resume", help="merge, compute what remains, and resubmit only the unfinished shards")
    p.add_argument("run", help="run folder")
    p.add_argument("--executor", choices=["local", "slurm"], help="default: the one the run was submitted with")
    p.add_argument("--workers", type=int, default=None,
                   help="local: worker processes sharing the shards (default: visible GPUs / --tp-size, else 1)")
    p.add_argument("--wait", action="store_true", help="wait for the resubmitted tasks (Slurm)")
    p.add_argument("--wait-timeout", type=float, default=None)
    from vidcap.commands.slurm_flags import add_slurm_arguments

    add_slurm_arguments(p)
    p.set_defaults(func=cmd_resume)


def reopen_retryable(run: RunDir, max_attempts: int) -> list[int]:
    """Clear the marker of done shards that still have rows failed fewer than `max_attempts` times."""
    from vidcap.manifest.split import load_shard
    from vidcap.worker import rows_to_do

    key = run.load_config()["manifest"]["key"]
    reopened = []
    for index in range(run.num_shards):
        if run.is_done(index):
            todo, _, _ = rows_to_do(run, index, load_shard(run, index), key, max_attempts)
            if todo.num_rows:
                run.clear_done(index)
                reopened.append(index)
    return reopened


def cmd_status(args: argparse.Namespace) -> int:
    from vidcap.status import format_status, run_status

    run = RunDir.at(args.run)
    print(format_status(run, run_status(run), show_all=args.all))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from vidcap.manifest.reduce_run import merge_run, remaining_run
    from vidcap.results import STATUS_OK, STATUS_SKIPPED
    from vidcap.commands.slurm_flags import resource_request
    from vidcap.scheduler.submit import submit_unfinished, wait_for

    from vidcap.tasks.spec import load_spec

    run = RunDir.at(args.run)
    config = run.load_config()
    if "task" not in config and "job" not in config:
        raise UserError(f"{run.root}: nothing was submitted in this run yet (use `vidcap submit`)")
    spec = load_spec(run)  # whatever task the run holds: resume continues it
    merged = merge_run(run, run.root / "merged.parquet")
    todo = remaining_run(run, run.root / "remaining.parquet", max_attempts=spec.max_attempts,
                         done=(STATUS_OK, STATUS_SKIPPED))  # what the shard tasks will not redo (worker.rows_to_do)
    print(f"{run.root}: {merged.ok} of {merged.rows} rows done ({spec.task}), {todo.written} remaining "
          f"({todo.given_up} given up after {spec.max_attempts} failures) "
          f"-> {run.root / 'merged.parquet'}, {run.root / 'remaining.parquet'}")
    reopened = reopen_retryable(run, spec.max_attempts)
    if reopened:
        print(f"shards {', '.join(map(str, reopened))}: done, but with failed rows to retry; reopened")
    args.executor = args.executor or config.get("submit", {}).get("executor", "local")
    submission = submit_unfinished(run, args.executor, resource_request(args), workers=args.workers)
    if args.wait:
        wait_for(run, submission, timeout_s=args.wait_timeout)
    return 0
