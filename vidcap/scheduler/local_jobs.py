"""Local pool workers as `vidcap status` sees them: their job ids and how a dead one is recognised.

Kept apart from vidcap.scheduler.workers (which imports the worker, and through it pyarrow) so that
`vidcap status` on a big run does not pay for loading the whole pool to ask whether a job id is local.
"""

from __future__ import annotations

from vidcap.run import RunDir

JOB_PREFIX = "local-"
LOG_NAME = "worker.err"
DIED_NAME = "died"  # in the worker's log folder: the one-line reason the pool saw it die for


def is_local_job(job_id: str) -> bool:
    return job_id.startswith(JOB_PREFIX)


def local_job_state(run: RunDir, job_id: str) -> tuple[str, list[str]]:
    """For `vidcap status`: ("failed", last log lines) when the pool saw worker `job_id` die, else ("", [])."""
    folder = run.logs_dir / job_id
    died = folder / DIED_NAME
    if not died.is_file():
        return "", []
    lines = [ln for ln in (folder / LOG_NAME).read_text(errors="replace").splitlines() if ln.strip()] \
        if (folder / LOG_NAME).is_file() else []
    return "failed", lines[-4:] + [f"pool: {died.read_text().strip()}"]
