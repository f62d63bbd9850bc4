"""`vidcap caption --engine openai` end to end, through the commands users type, against the real
chat-completions server of tests/openai_server.py: on this machine, and as a CPU job array on the test
Slurm cluster.

The videos are tiny real files whose frames carry their seed (vidcap.fixtures.synth); the server decodes every JPEG
it is sent and answers with the seed and frame index it finds, so each caption is checked against its own
row's video. Faults are chosen by seed, on a payload's first attempt only: a rerun sends the same bytes.
"""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from openai_server import FakeOpenAIServer, RequestInfo
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from worker_helpers import make_clips

from vidcap.attempts import read_journal
from vidcap.cli import main
from vidcap.tasks.spec import load_spec as load_job
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.scheduler.preflight import check_before_submit

KEY = "sk-run-5c1e07d2a9b34f68aa"
CLIPS = 24
FRAMES = 3
BROKEN = {9: "truncated"}
REFUSED = 5  # refused on its first attempt: an error row that is billed, then captioned by `resume`
#: seed -> the fault its first request gets (each survived by a retry)
FAULT_BY_SEED = {1: "429", 2: "500", 3: "drop", 4: "malformed", 6: "slow", 7: "503", 8: "not_completion"}
COMMON = ["--engine", "openai", "--model", "gpt-4o", "--concurrency", "8", "--num-frames", FRAMES,
          "--resize", "0", "--request-timeout", "1", "--request-attempts", "4"]


def seed_of(info: RequestInfo) -> int | None:
    found = re.search(r"seed (\d+) frame", info.answer)
    return int(found[1]) if found else None


def faults(info: RequestInfo) -> str | None:
    if info.attempt != 1:
        return None
    seed = seed_of(info)
    return "refusal" if seed == REFUSED else FAULT_BY_SEED.get(seed)  # type: ignore[arg-type]


def vidcap(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    """`vidcap ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def check_captions(output: Path, refused_ok: bool) -> list[dict[str, str]]:
    """Every manifest row once, in order, each ok caption naming its own video's seed in every frame."""
    rows = list(csv.DictReader(open(output, encoding="utf-8")))
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(CLIPS)]
    for seed, row in enumerate(rows):
        assert row["seed"] == str(seed)  # the manifest's own column, kept
        if seed in BROKEN:
            assert row["status"] == "error" and row["text"] == "", row
        elif seed == REFUSED and not refused_ok:
            assert row["status"] == "error" and row["error"].startswith("refused: "), row
            assert float(row["cost_usd"]) > 0 and int(row["prompt_tokens"]) > 0  # a refusal is billed
        else:
            assert row["status"] == "ok", row
            assert re.findall(r"seed (\d+) frame", row["text"]) == [str(seed)] * FRAMES, row["text"]
            assert float(row["cost_usd"]) > 0
            retried = seed in FAULT_BY_SEED or seed == REFUSED
            assert int(row["attempts"]) == (2 if retried and seed != REFUSED else 1), row
    return rows


def assert_key_nowhere(key: str, *folders: Path, texts: tuple[str, ...] = ()) -> None:
    for text in texts:
        assert key not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), f"the API key is in {path}"


def cost_line(status: str) -> float:
    found = re.search(r"^cost\s+\$(\d+\.\d+) estimated so far", status, re.M)
    assert found, status
    return float(found[1])


# ------------------------------------------------------------------------------------------ this machine
@pytest.mark.timeout(240)
def test_caption_locally_survives_faults_counts_cost_and_resume_retries_the_refusal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_clips(tmp_path / "v", CLIPS, broken=BROKEN)
    output = tmp_path / "captions.csv"
    run = RunDir.at(tmp_path / "captions.run")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY, latency_s=0.3, faults=faults, slow_s=3.0) as server:
        code, out, err = vidcap(capsys, "caption", manifest, "--output", output, "--run", run.root, "--shards", 2,
                                *COMMON, "--api-base", server.base_url)
        assert code == 0, err[-3000:]
        assert f"{CLIPS} rows: {CLIPS - 2} captioned, 2 failed" in out, out
        rows = check_captions(output, refused_ok=False)
        assert set(server.faults_sent) == set(FAULT_BY_SEED.values()) | {"refusal"}
        assert 2 <= server.max_in_flight <= 8, server.max_in_flight  # several at once, never past --concurrency
        assert server.unauthorized == 0
        journals = [read_journal(run.attempts_path(i)) for i in range(run.num_shards)]  # the worker's journals
        assert sum(len(ended) for ended, _ in journals) == server.chat_requests
        assert [unknown for _, unknown in journals] == [[]] * run.num_shards

        code, status, _ = vidcap(capsys, "status", run.root)
        assert code == 0 and "every attempt counted" in status, status
        first_cost = cost_line(status)
        assert first_cost == pytest.approx(sum(float(r["cost_usd"] or 0) for r in rows), abs=1e-4)

        # resume: the refused row is asked again (its second attempt is answered), the broken video is not
        # readable and fails again; the cost of both attempts at the refused row is counted
        code, out, err = vidcap(capsys, "resume", run.root)
        assert code == 0, err[-3000:]
        assert vidcap(capsys, "merge", run.root, "--output", output)[0] == 0
        rows = check_captions(output, refused_ok=True)
        code, status, _ = vidcap(capsys, "status", run.root)
        total = cost_line(status)
        every_row = sum(pc.sum(read_results(run, i)["cost_usd"]).as_py() or 0 for i in range(run.num_shards))
        assert total == pytest.approx(every_row, abs=1e-4)
        assert total > first_cost and total > sum(float(r["cost_usd"] or 0) for r in rows) + 1e-5
        assert server.chat_requests == CLIPS - len(BROKEN) + len(FAULT_BY_SEED) + 1
    assert_key_nowhere(KEY, run.root, output.parent, texts=(out, err, status))


@pytest.mark.timeout(120)
def test_a_wrong_key_fails_at_once_with_one_line_and_no_error_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_clips(tmp_path / "v", 4)
    wrong = "sk-wrong-0000111122223333"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with FakeOpenAIServer(api_key=KEY) as server:
        code, out, err = vidcap(capsys, "caption", manifest, "--output", tmp_path / "o.csv", *COMMON,
                                "--api-base", server.base_url)
        assert server.chat_requests == 0 and server.unauthorized >= 1
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("vidcap caption: error: the API key was refused") and "HTTP 401" in lines[0]
    assert wrong not in err  # the server echoed it; we do not
    run = RunDir.at(tmp_path / "o.run")
    assert all(read_results(run, i).num_rows == 0 for i in range(run.num_shards))
    assert not (tmp_path / "o.csv").exists()


def test_before_a_slurm_submit_the_key_is_checked_and_its_route_advised(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks `submit --executor slurm` makes before a job array goes out (tested here without Slurm)."""
    manifest = make_clips(tmp_path / "v", 2)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as server:
        assert vidcap(capsys, "submit", manifest, "--run", tmp_path / "run", "--prepare-only", *COMMON,
                      "--api-base", server.base_url)[0] == 0
        job = load_job(RunDir.at(tmp_path / "run"))
        check_before_submit(job)  # the key from the environment: works, with advice
        err = capsys.readouterr().err
        assert "warning: the API key goes to the tasks in their environment (OPENAI_API_KEY)" in err
        assert "--api-key-file" in err and KEY not in err

        key_file = tmp_path / "key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o644)
        monkeypatch.delenv("OPENAI_API_KEY")
        check_before_submit(dataclass_with(job, api_key_file=str(key_file)))
        assert f"can be read by others (mode -rw-r--r--); chmod 600 {key_file}" in capsys.readouterr().err
        key_file.chmod(0o600)
        check_before_submit(dataclass_with(job, api_key_file=str(key_file)))
        assert capsys.readouterr().err == ""
        assert server.model_list_requests == 3 and server.chat_requests == 0

    # nothing answers at that address: a warning (compute nodes may reach it), not a refusal
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    check_before_submit(job)
    assert "warning: cannot reach the API at" in capsys.readouterr().err


def dataclass_with(job: Any, **engine: Any) -> Any:
    import dataclasses

    return dataclasses.replace(job, engine_settings=dataclasses.replace(job.engine_settings, **engine))


# ---------------------------------------------------------------------------------------- a Slurm array
@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_caption_as_a_cpu_job_array_with_a_key_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        slurm_job_env: None) -> None:
    manifest = make_clips(tmp_path / "v", CLIPS, broken=BROKEN)
    output = tmp_path / "captions.csv"
    run = RunDir.at(tmp_path / "captions.run")
    key_file = tmp_path / "secrets" / "openai.key"
    key_file.parent.mkdir()
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    slurm = ["--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "1", "--wait-timeout", "300"]
    try:
        with FakeOpenAIServer(api_key=KEY, latency_s=0.3, faults=faults, slow_s=3.0) as server:
            # a wrong key file is refused before anything is queued
            wrong = tmp_path / "secrets" / "wrong.key"
            wrong.write_text("sk-wrong-key-4444\n")
            wrong.chmod(0o600)
            code, _, err = vidcap(capsys, "caption", manifest, "--output", output, "--run", run.root,
                                  "--shards", 3, *COMMON, "--api-base", server.base_url, "--api-key-file", wrong,
                                  *slurm)
            assert code == 2 and "the API key was refused" in err and not run.jobs_path.exists(), err[-2000:]

            code, out, err = vidcap(capsys, "caption", manifest, "--output", output, "--run", run.root,
                                    "--shards", 3, *COMMON, "--api-base", server.base_url, "--api-key-file", key_file,
                                    *slurm)
            assert code == 0, out + err[-3000:]
            assert "submitted 3 shard tasks as Slurm job array" in out
            assert "warning" not in err, err
            check_captions(output, refused_ok=False)
            assert server.max_in_flight >= 2
        code, status, _ = vidcap(capsys, "status", run.root)
        assert cost_line(status) > 0
        jobs = RunDir.at(run.root).latest_jobs().values()
        shown = subprocess.run(["scontrol", "show", "job", "-dd", *{j.split("_")[0] for j in jobs}],
                               capture_output=True, text=True, timeout=30).stdout
        # the task logs, the sbatch scripts submitit wrote and the job records hold no key
        assert_key_nowhere(KEY, run.root, texts=(out, err, status, shown, output.read_text()))
        assert any(run.logs_dir.rglob("*.sh")) or any(run.logs_dir.rglob("*submission*"))
    finally:
        jobs = run.latest_jobs().values() if run.jobs_path.exists() else []
        if jobs:
            subprocess.run(["scancel", *{j.split("_")[0] for j in jobs}], timeout=30, check=False)
