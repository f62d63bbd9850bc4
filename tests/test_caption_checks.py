"""Caption checks inside real runs: tiny random-weight models (which loop, babble and run to the token limit)
through `vidcap caption`, `status`, `resume` and `merge`, and the API engine's finish_reason through the test
server. The flags are never faked: they come from what the models really wrote."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openai_server import FakeOpenAIServer, RequestInfo
from worker_helpers import make_clips

from vidcap.checks import CaptionChecker, CheckContext
from vidcap.cli import main
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.fixtures.tiny_models import make_tiny_model

CLIPS = 6
TINY = ["--shards", "2", "--batch-size", "3", "--num-frames", "2", "--resize", "64", "--max-new-tokens", "24"]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny-llava", family="llava")


def vidcap(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def status_flags(status: str) -> dict[str, int]:
    found = re.search(r"^flags\s+(.*?)\s+\(caption checks", status, re.M)
    assert found, status
    items = found[1].split()
    return {items[i]: int(items[i + 1]) for i in range(0, len(items), 2)}


def count_flags(rows: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for flag in filter(None, (f.strip() for f in row["flags"].split(","))):
            counts[flag] = counts.get(flag, 0) + 1
    return counts


@pytest.mark.timeout(400)
def test_keep_flags_rows_ok_counts_them_in_status_and_merge_drops_them(tmp_path, tiny_llava, capsys):
    manifest = make_clips(tmp_path / "v", CLIPS, broken={4: "truncated"})
    output = tmp_path / "out.csv"
    run = RunDir.at(tmp_path / "run")
    code, out, err = vidcap(capsys, "caption", manifest, "--output", output, "--run", run.root,
                            "--model", tiny_llava, *TINY)
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader(open(output, encoding="utf-8")))
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(CLIPS)]
    checker = CaptionChecker()
    content = 0
    for i, row in enumerate(rows):
        if i == 4:  # an unreadable video: an error row, never checked
            assert row["status"] == "error" and row["flags"] == ""
            continue
        assert row["status"] == "ok"  # --on-flag keep (the default): flagged rows stay ok
        flags = [f.strip() for f in row["flags"].split(",") if f.strip()]
        # random weights: the babble runs to --max-new-tokens (the HF engine's finish reason "length"),
        # and most of it is flagged for what it says as well
        assert "truncated" in flags, (row["text"], flags)
        content += bool({"loop", "not_language"} & set(flags))
        # the flags are the checks' verdict on the text written, with the run's prompt and medium
        again = checker.flags(row["text"], CheckContext(prompt=run.load_config()["task"]["settings"]["prompt"],
                                                        is_video=True, finish_reason="length"))
        assert flags == again
    assert content >= (CLIPS - 1) // 2, [r["text"] for r in rows]
    code, status, _ = vidcap(capsys, "status", run.root)
    assert code == 0 and status_flags(status) == count_flags(rows)

    # the stored flags are a list column; a clean merge leaves out every flagged row (here all the readable ones)
    assert read_results(run, 0).schema.field("flags").type == pa.list_(pa.string())
    code, out, err = vidcap(capsys, "merge", run.root, "--output", tmp_path / "clean.parquet", "--drop-flagged")
    assert code == 0, err
    clean = pq.read_table(tmp_path / "clean.parquet")
    assert clean["path"].to_pylist() == ["clip_004.mp4"]  # only the error row had no flag
    assert f"; {CLIPS - 1} flagged rows left out" in out
    # only some flags dropped: the rows without a loop stay
    code, out, err = vidcap(capsys, "merge", run.root, "--output", tmp_path / "noloop.parquet",
                            "--drop-flagged", "loop")
    assert code == 0, err
    kept = pq.read_table(tmp_path / "noloop.parquet")["path"].to_pylist()
    assert kept == [r["path"] for r in rows if "loop" not in r["flags"]]


@pytest.mark.timeout(600)
def test_retry_makes_flagged_rows_errors_that_resume_reopens_until_max_attempts(tmp_path, tiny_llava, capsys):
    manifest = make_clips(tmp_path / "v", CLIPS)
    output = tmp_path / "out.csv"
    run = RunDir.at(tmp_path / "run")
    # only the loop check: a caption without a loop is ok on the first attempt and never asked again
    code, out, err = vidcap(capsys, "caption", manifest, "--output", output, "--run", run.root,
                            "--model", tiny_llava, *TINY, "--checks", "loop", "--on-flag", "retry",
                            "--max-attempts", "2")
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader(open(output, encoding="utf-8")))
    looped = [r["path"] for r in rows if r["status"] == "error"]
    assert looped, "the tiny model looped nowhere: nothing to retry"
    for row in rows:
        if row["status"] == "error":
            assert row["error"] == "flagged: loop" and row["flags"] == "loop" and row["text"]  # text kept
            assert row["failures"] == "1"
        else:
            assert row["status"] == "ok" and row["flags"] == ""
    code, status, _ = vidcap(capsys, "status", run.root)
    assert status_flags(status) == {"loop": len(looped)}
    assert re.search(rf"rows\s+ok {CLIPS - len(looped)}\s+error {len(looped)}", status), status

    attempts_before = {i: read_results(run, i).num_rows for i in range(run.num_shards)}
    code, out, err = vidcap(capsys, "resume", run.root)
    assert code == 0, err[-2000:]
    assert "reopened" in out  # done shards with flagged rows to retry
    written = sum(read_results(run, i).num_rows - attempts_before[i] for i in range(run.num_shards))
    assert written == len(looped)  # exactly the flagged rows were asked again, nothing else
    assert vidcap(capsys, "merge", run.root, "--output", output)[0] == 0
    after = {r["path"]: r for r in csv.DictReader(open(output, encoding="utf-8"))}
    for path in looped:  # greedy decoding loops again: second failure, then given up
        assert after[path]["failures"] == "2" and after[path]["error"] == "flagged: loop"
    code, out, err = vidcap(capsys, "resume", run.root)
    assert code == 0 and "reopened" not in out
    assert f"{len(looped)} given up after 2 failures" in out, out


def seed_of(info: RequestInfo) -> int | None:
    found = re.search(r"seed (\d+) frame", info.answer)
    return int(found[1]) if found else None


@pytest.mark.timeout(240)
def test_api_finish_reason_length_becomes_truncated(tmp_path: Path, capsys, monkeypatch):
    key = "sk-checks-0a1b2c3d4e5f"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    manifest = make_clips(tmp_path / "v", 4)
    output = tmp_path / "out.csv"
    cut = {1, 3}
    with FakeOpenAIServer(api_key=key, faults=lambda info: "length" if seed_of(info) in cut else None) as server:
        code, out, err = vidcap(capsys, "caption", manifest, "--output", output, "--engine", "openai",
                                "--model", "gpt-4o", "--num-frames", "2", "--resize", "0",
                                "--api-base", server.base_url, "--checks", "truncated,empty")
        assert code == 0, err[-2000:]
        assert server.faults_sent["length"] == len(cut)
    rows = list(csv.DictReader(open(output, encoding="utf-8")))
    for seed, row in enumerate(rows):
        assert row["status"] == "ok" and row["finish_reason"] == ("length" if seed in cut else "stop")
        assert row["flags"] == ("truncated" if seed in cut else ""), row


@pytest.mark.timeout(600)
def test_hf_retry_with_a_repetition_penalty_writes_something_else(tmp_path, tiny_llava, capsys):
    """Greedy decoding writes the same loop on every retry; --retry-repetition-penalty makes the retry differ
    (and leaves first attempts as they were)."""
    manifest = make_clips(tmp_path / "v", CLIPS)
    run = RunDir.at(tmp_path / "run")
    common = ["--model", tiny_llava, *TINY, "--checks", "loop", "--on-flag", "retry", "--max-attempts", "2"]
    code, _, err = vidcap(capsys, "caption", manifest, "--output", tmp_path / "plain.csv", "--run",
                          tmp_path / "plain", *common)
    assert code == 0, err[-2000:]
    code, _, err = vidcap(capsys, "caption", manifest, "--output", tmp_path / "out.csv", "--run", run.root,
                          *common, "--retry-repetition-penalty", "2.0")
    assert code == 0, err[-2000:]
    plain = {r["path"]: r["text"] for r in csv.DictReader(open(tmp_path / "plain.csv", encoding="utf-8"))}
    first = {r["path"]: r for r in csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8"))}
    assert {p: r["text"] for p, r in first.items()} == plain  # first attempts: greedy, untouched
    looped = [p for p, r in first.items() if r["status"] == "error"]
    assert looped
    assert vidcap(capsys, "resume", run.root)[0] == 0
    texts: dict[str, list[str]] = {}
    for i in range(run.num_shards):
        for row in read_results(run, i).to_pylist():
            texts.setdefault(row["key"], []).append(row["text"])
    for path in looped:
        assert len(texts[path]) == 2 and texts[path][1] != texts[path][0], texts[path]
