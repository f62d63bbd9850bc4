"""Chaos beyond the no-op engine, on the Slurm test cluster: random `scancel` and `kill -9` of array tasks
while a run captions with the tiny Hugging Face model, and with the API engine against the test server;
then `vidcap resume` until done.

The checks: every key exactly once with status ok (in the merged output and in the raw result store: a kill
never makes a row be written twice), at most one batch redone per kill (the API server counts the requests
each video's frames were sent in), and the cost ledger counting every billed attempt it could see: every
result row ever written, refusals and superseded attempts included; the only billed requests it cannot see
are those of a batch a kill cut off before it was written, at most one batch per kill.

The API check compares the server's own record of each billed answer (video, attempt, refusal or caption, tokens)
with the ledger row by row; every billed answer the ledger lacks must lie next to a kill, at most a batch per kill.
The attempts journal (written before each request leaves) must hold every billed answer: as an ended attempt
with its tokens, or as one a kill left open, which `vidcap status` names as possibly billed.

Bounded: a few kills in a window of under a minute, then resumes under a deadline. VIDCAP_CHAOS_SEED replays
the choices.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from openai_server import FakeOpenAIServer, RequestInfo
from test_slurm_runs import (Cli, _all_jobs, all_done, cleanup, cli, note, task_logs, wait_ended,  # noqa: F401
                             worker_pid)
from worker_helpers import make_clips

from vidcap.attempts import read_journal
from vidcap.fixtures.tiny_models import make_tiny_model
from vidcap.results import read_results
from vidcap.run import RunDir

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_job_env"),
              pytest.mark.timeout(600)]

SLURM = ["--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--time", "5", "--num-frames", "2"]
KEY = "sk-chaos-77c1d2e3f4a5b6c7"
REFUSED = {5, 17}  # refused on their first attempt: billed error rows, captioned by a later resume


def unleash(run: RunDir, cli: Cli, rng: random.Random, kills: int, window_s: float,
            kill_times: list[float] | None = None) -> dict[str, str]:
    """Kill running tasks at random (scancel or kill -9 of the worker), resuming now and then; job -> how.
    `kill_times` gets the time.monotonic() of each kill."""
    plan = ["scancel", "kill-9"] * (kills // 2) + ["kill-9"] * (kills % 2)
    rng.shuffle(plan)
    killed: dict[str, str] = {}
    # the window opens when a first task has written a batch (loading a model on a busy node takes a while)
    first = time.monotonic() + 180
    while not any(worker_pid(run, s, j) for s, j in run.latest_jobs().items()):
        assert time.monotonic() < first, "no task wrote a batch within 180 s"
        time.sleep(0.5)
    end = time.monotonic() + window_s
    while plan and time.monotonic() < end:
        time.sleep(rng.uniform(1.0, 3.0))
        live = {s: j for s, j in run.latest_jobs().items() if j not in killed and not run.is_done(s)}
        targets = [(s, j, pid) for s, j in sorted(live.items()) if (pid := worker_pid(run, s, j))]
        if not targets:
            continue
        shard, job_id, pid = rng.choice(targets)
        how = plan.pop()
        if how == "scancel":
            subprocess.run(["scancel", job_id], check=True, timeout=30)
        else:
            os.kill(pid, signal.SIGKILL)
        killed[job_id] = how
        if kill_times is not None:
            kill_times.append(time.monotonic())
        note(f"{time.strftime('%X')} {how} shard {shard} (job {job_id}, pid {pid}, "
             f"{read_results(run, shard).num_rows} rows written)")
        if rng.random() < 0.4:
            cli("resume", run.root)  # the killed task may not have ended yet: its shard is refused then
    return killed


def resume_until_done(run: RunDir, cli: Cli, deadline_s: float, seed: int, poll_s: float = 4.0) -> int:
    """Resume until every shard is done and a resume reopens none (a done shard with a refused row)."""
    deadline = time.monotonic() + deadline_s
    resumes = 0
    while True:
        assert time.monotonic() < deadline, f"seed {seed}: not done after the deadline; {cli('status', run.root)}"
        finished = all_done(run)
        out = cli("resume", run.root)
        resumes += 1
        if finished and "reopened" not in out:
            return resumes
        time.sleep(poll_s)


def check_run(run: RunDir, cli: Cli, keys: list[str], killed: dict[str, str], seed: int,
              may_fail: set[str] = frozenset()) -> dict[str, collections.Counter]:
    """Every key once and ok in the output and once ok in the raw store; no job ended badly unless killed;
    no two live writers of a shard. Returns the raw store's rows per key and status."""
    merged = run.root / "final.parquet"
    out = cli("merge", run.root, "--output", merged)
    assert f"{len(keys)} rows: {len(keys)} ok, 0 error" in out, out
    ok: collections.Counter = collections.Counter()
    failed: collections.Counter = collections.Counter()
    for i in range(run.num_shards):
        rows = read_results(run, i)
        for key, status in zip(rows["key"].to_pylist(), rows["status"].to_pylist()):
            (ok if status == "ok" else failed)[key] += 1
    assert sorted(ok) == sorted(keys) and set(ok.values()) == {1}, f"seed {seed}: a key written twice or lost"
    assert set(failed) <= set(may_fail), f"seed {seed}: unexpected error rows {failed}"
    states = wait_ended(_all_jobs(run))
    others = {j: s for j, s in states.items() if s != "COMPLETED" and j not in killed}
    assert others == {}, f"seed {seed}: jobs that ended badly without being killed: {others}"
    assert "being written by another process" not in task_logs(run), "a shard had two live tasks at once"
    return {"ok": ok, "failed": failed}


def chaos_seed() -> tuple[int, random.Random]:
    seed = int(os.environ.get("VIDCAP_CHAOS_SEED", random.randrange(1 << 30)))
    note(f"chaos seed {seed} (VIDCAP_CHAOS_SEED={seed} replays the choices)")
    return seed, random.Random(seed)


def test_chaos_with_the_tiny_model(tmp_path: Path, cli: Cli, cleanup: Any) -> None:  # noqa: F811
    seed, rng = chaos_seed()
    model = make_tiny_model(tmp_path / "tiny-llava", family="llava")
    manifest = make_clips(tmp_path / "videos", 32)
    run = RunDir.at(tmp_path / "run")
    cleanup(run)
    out = cli("submit", manifest, "--run", run.root, "--shards", 4, "--model", model, "--batch-size", 1,
              "--max-new-tokens", 256, "--resize", 64, "--device", "cpu", *SLURM)
    assert "submitted" in out, out
    killed = unleash(run, cli, rng, kills=4, window_s=60)
    assert len(killed) >= 3, f"only {len(killed)} kills landed (seed {seed})"
    resumes = resume_until_done(run, cli, 240, seed, poll_s=10)  # a task loads the model first
    check_run(run, cli, [f"clip_{i:03d}.mp4" for i in range(32)], killed, seed)
    tokens = sum(pc.sum(read_results(run, i)["generated_tokens"]).as_py() for i in range(run.num_shards))
    assert tokens > 0
    note(f"tiny model: {len(killed)} kills, {len(_all_jobs(run))} jobs for 4 shards, {resumes} resumes after")


def test_chaos_with_the_api_engine(tmp_path: Path, cli: Cli, cleanup: Any,  # noqa: F811
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seed, rng = chaos_seed()
    clips, batch = 48, 2
    manifest = make_clips(tmp_path / "videos", clips)
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def refusals(info: RequestInfo) -> str | None:
        return "refusal" if info.attempt == 1 and FakeOpenAIServer.seed_of(info.answer) in REFUSED else None

    run = RunDir.at(tmp_path / "run")
    cleanup(run)
    with FakeOpenAIServer(api_key=KEY, latency_s=2.5, faults=refusals) as server:  # a shard: 6 batches, 15 s
        out = cli("submit", manifest, "--run", run.root, "--shards", 4, "--engine", "openai", "--model", "gpt-4o",
                  "--api-base", server.base_url, "--api-key-file", key_file, "--concurrency", batch,
                  "--batch-size", batch, "--resize", 0, "--request-timeout", 10, *SLURM)
        assert "submitted" in out, out
        kill_times: list[float] = []
        killed = unleash(run, cli, rng, kills=4, window_s=60, kill_times=kill_times)
        assert len(killed) >= 3, f"only {len(killed)} kills landed (seed {seed})"
        resumes = resume_until_done(run, cli, 180, seed)
        keys = [f"clip_{i:03d}.mp4" for i in range(clips)]
        rows = check_run(run, cli, keys, killed, seed, may_fail={f"clip_{s:03d}.mp4" for s in REFUSED})
        answered = list(server.answered)
        sent = server.chat_requests  # billed or not: a request cut off by a kill is answered to no one

    # The server's own record of what it billed, against the ledger (the store's rows: each holds the tokens and
    # cost of the answer it came from, refusals included). Expectations come from what happened, not a schedule.
    billed: dict[tuple[int, str], list[Any]] = collections.defaultdict(list)  # (video, kind) -> answers
    for a in answered:
        assert a.seed is not None and a.kind in ("ok", "refusal"), a
        # the server refuses a payload's first attempt only, and only for the REFUSED videos
        assert (a.kind == "refusal") == (a.attempt == 1 and a.seed in REFUSED), a
        billed[a.seed, a.kind].append(a)
    assert {s for s, _ in billed} == set(range(clips)), "every video answered at least once, none other"
    recorded: dict[tuple[int, str], list[tuple[int, int]]] = collections.defaultdict(list)
    cost = 0.0
    for i in range(run.num_shards):
        table = read_results(run, i)
        for key, status, prompt, generated in zip(*(table[c].to_pylist() for c in
                                                   ("key", "status", "prompt_tokens", "generated_tokens"))):
            assert prompt, f"seed {seed}: {key} has a {status} row without tokens: every row here was billed"
            recorded[int(key[5:8]), "ok" if status == "ok" else "refusal"].append((prompt, generated))
        cost += pc.sum(table["cost_usd"]).as_py() or 0.0
    # each ledger row is one billed answer, with the very tokens the server billed; what is left over was
    # billed but never written: the answers of a batch in flight when its task was killed
    unseen: list[Any] = []
    for (s, kind), rows_here in recorded.items():
        tokens = [(a.prompt_tokens, a.completion_tokens) for a in billed[s, kind]]
        assert len(rows_here) <= len(tokens) and all(t in tokens for t in rows_here), \
            f"seed {seed}: video {s}: ledger rows {kind} {rows_here} not all billed: {tokens}"
    for (s, kind), answers in billed.items():
        unseen += sorted(answers, key=lambda a: a.time)[:len(answers) - len(recorded[s, kind])]
    assert len(unseen) <= batch * len(killed), f"seed {seed}: {len(unseen)} billed answers unrecorded, " \
        f"{len(killed)} kills: {unseen}"
    # ... and each such answer lies close to a kill (up to KillWait after a scancel), at most a batch per kill:
    # earliest-deadline matching of the answers, in time order, to the kills
    room = {t: batch for t in kill_times}
    for a in sorted(unseen, key=lambda a: a.time):
        near = [t for t in sorted(room) if room[t] and t - 30 <= a.time <= t + 15]
        assert near, f"seed {seed}: a billed answer at {a.time:.1f} no kill explains (kills at {kill_times})"
        room[near[0]] -= 1
    # The attempts journal (written before each request leaves, and when it ends) misses nothing: every billed
    # answer is an ended attempt with the very tokens billed, or an attempt a killed task sent and never ended
    ended, open_ = [], []
    for i in range(run.num_shards):
        done_here, unknown_here = read_journal(run.attempts_path(i))
        ended += done_here
        open_ += unknown_here
    journal_billed: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for record in ended:
        if record["prompt_tokens"]:
            journal_billed[int(str(record["key"])[5:8])].append((record["prompt_tokens"], record["completion_tokens"]))
    unknown = collections.Counter(int(str(record["key"])[5:8]) for record in open_)
    for s in range(clips):
        server_side = [(a.prompt_tokens, a.completion_tokens) for kind in ("ok", "refusal") for a in billed[s, kind]]
        assert all(t in server_side for t in journal_billed[s]), (seed, s, journal_billed[s], server_side)
        assert len(journal_billed[s]) <= len(server_side) <= len(journal_billed[s]) + unknown[s], \
            f"seed {seed}: video {s}: billed {len(server_side)}, journal ended {journal_billed[s]}, open {unknown[s]}"
    assert len(open_) <= batch * len(killed), f"seed {seed}: {len(open_)} requests left open for {len(killed)} kills"
    # sent is written before a request leaves: it counts every request the server saw, and more only by those a
    # kill cut before they left
    assert len(ended) <= sent <= len(ended) + len(open_), (seed, sent, len(ended), len(open_))
    refused_rows = {s: len(recorded[s, "refusal"]) for s in REFUSED}
    for s in REFUSED:  # a refusal the ledger saw is an error row (then captioned by a resume), one it missed none
        assert rows["failed"][f"clip_{s:03d}.mp4"] == refused_rows[s], (seed, s, rows["failed"])
    # requests sent beyond one per video and one more per refusal seen: redone after kills, at most a batch each
    resent = sent - clips - sum(refused_rows.values())
    assert 0 <= resent <= batch * len(killed), f"seed {seed}: {resent} requests sent again for {len(killed)} kills"
    status = cli("status", run.root)
    shown = float(status.split("cost      $", 1)[1].split()[0])
    assert shown == pytest.approx(cost, abs=1e-4) and cost > 0, status
    assert "every attempt counted" in status
    if open_:  # a billed answer no task read is named, not hidden
        assert f"but {len(open_)} request" in status and "possibly billed" in status, status
    note(f"API: {len(killed)} kills, {sent} requests sent, {len(answered)} billed for {clips} videos "
         f"({sum(len(billed[s, 'refusal']) for s in REFUSED)} refusals billed, {sum(refused_rows.values())} "
         f"recorded; {resent} sent again, {len(unseen)} billed answers lost to kills, {len(open_)} left open in "
         f"the journal), ledger ${cost:.4f}, "
         f"{resumes} resumes after")
