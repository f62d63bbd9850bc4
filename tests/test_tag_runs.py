"""`vidcap tag` end to end, through the commands users type: a tiny random Llama chat model on this machine
and on the test Slurm cluster (with resume), and the OpenAI-compatible test server answering each caption's
known tag list under batching, retries, refusals and unparsable answers.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openai_server import FakeOpenAIServer, RequestInfo, caption_of, tags_for
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)

from vidcap.cli import main
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.tags.parse import TagParseError, parse_tags
from vidcap.tags.prompts import fill, instruction

os.environ.setdefault("OMP_NUM_THREADS", "1")

CAPTIONS = [
    "A red car drives along a wet road at night.",
    "",
    "A woman walks her dog through a quiet park.",
    "Two children ride bicycles down a dirt path between tall trees, then stop by a river.",
    "   ",
    "A cat sleeps on a windowsill.",
    "People dance at an outdoor concert while lights sweep the crowd.",
    "A chef slices vegetables.",
    "Clouds move over a city skyline at sunset.",
]
EMPTY = {1, 4}
MAX_NEW = 12
TIE = 1e-3


def write_captions(path: Path, captions: list[str] = CAPTIONS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "text", "seed"])
        for i, caption in enumerate(captions):
            writer.writerow([f"clip_{i:03d}.mp4", caption, i])
    return path


def vidcap(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path, encoding="utf-8")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vidcap.fixtures.tiny_text_model import make_tiny_text_model

    return make_tiny_text_model(tmp_path_factory.mktemp("model") / "tiny-llama-chat")


@pytest.fixture(scope="module")
def alone(tiny):
    """Each caption's answer generated on its own (no batch, no padding), and whether its greedy choices had a
    clear margin (random weights: a near-tie may flip under a batch's float noise, see DESIGN.md)."""
    import torch

    from vidcap.engines.hf_chat import ChatGenerator, load_chat_model, load_chat_tokenizer

    generator = ChatGenerator(load_chat_model(str(tiny), device="cpu"), load_chat_tokenizer(str(tiny)), MAX_NEW)
    answers = {}
    for caption in CAPTIONS:
        if not caption.strip():
            continue
        message = fill(instruction("objects"), caption)
        inputs = generator.tokenizer([generator.prompt_text(message)], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = generator.model.generate(**inputs, generation_config=generator.generation, output_scores=True,
                                           return_dict_in_generate=True)
        clear = all(float(torch.topk(s[0], 2).values.diff().abs()) >= TIE for s in out.scores)
        answers[caption] = (generator.generate([message])[0].text, clear)
    return answers


def check_rows(rows: list[dict[str, str]], alone: dict[str, tuple[str, bool]], key: str = "objects") -> None:
    """Every row once, in order, its own columns kept; empty captions skipped; every answered row holds its own
    caption's answer, and its status and tags are what parsing that answer gives."""
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(len(CAPTIONS))]
    compared = 0
    for i, row in enumerate(rows):
        assert row["seed"] == str(i) and row["text"] == CAPTIONS[i]
        if i in EMPTY:
            assert row["status"] == "skipped" and row["error"] == "no text in column 'text'", row
            assert row[key] == "" and row["tag_answer"] == ""
            continue
        answer, clear = alone[CAPTIONS[i]]
        if clear:
            assert row["tag_answer"] == answer, (i, row)
            compared += 1
        assert row["tag_answer"], row  # the raw answer is kept, good or not
        try:
            tags = parse_tags(row["tag_answer"], key)
        except TagParseError as exc:
            assert row["status"] == "error" and row["error"] == f"unparsable answer: {exc.reason}" + (
                " (the answer was cut at --max-new-tokens)" if int(row["generated_tokens"]) == MAX_NEW else ""), row
            assert row[key] == ""
        else:
            assert row["status"] == "ok" and row[key] == ", ".join(tags), row
    assert compared >= len(alone) - 1, "too many near-ties to prove the answers are each row's own"


@pytest.mark.timeout(300)
def test_tag_locally_with_a_tiny_chat_model_then_resume(tmp_path, tiny, alone, capsys):
    captions = write_captions(tmp_path / "captions.csv")
    prefix = tmp_path / "meta"
    common = ["--model", tiny, "--max-new-tokens", MAX_NEW, "--max-attempts", 2]
    code, out, err = vidcap(capsys, "tag", captions, "--key", "objects", "--output-prefix", prefix, "--shards", 3,
                            "--batch-size", 4, *common)
    assert code == 0, out + err[-3000:]
    output = tmp_path / "meta_objects.csv"
    rows = read_csv(output)
    check_rows(rows, alone)
    failed = [r["path"] for r in rows if r["status"] == "error"]
    assert f"{len(CAPTIONS)} rows: {sum(r['status'] == 'ok' for r in rows)} tagged, {len(failed)} failed" in out

    # resume retries the unparsable rows (up to --max-attempts), never the skipped ones
    run = RunDir.at(tmp_path / "meta_objects.run")
    code, out, _ = vidcap(capsys, "resume", run.root)
    assert code == 0 and f"{len(failed)} remaining (0 given up after 2 failures)" in out, out
    code, out, _ = vidcap(capsys, "resume", run.root)
    assert code == 0 and f"0 remaining ({len(failed)} given up after 2 failures)" in out, out
    assert "reopened" not in out
    merged = pq.read_table(run.root / "merged.parquet").to_pylist()
    assert [r["failures"] for r in merged if r["status"] == "error"] == [2] * len(failed)
    assert merged[0]["objects"] is None or isinstance(merged[0]["objects"], list)
    keys = [k for i in range(run.num_shards) for k in read_results(run, i)["key"].to_pylist()]
    for i in EMPTY:  # written once, never reopened
        assert keys.count(f"clip_{i:03d}.mp4") == 1
    for path in failed:
        assert keys.count(path) == 2


@pytest.mark.timeout(300)
def test_both_keys_in_one_run_to_parquet(tmp_path, tiny, capsys):
    captions = write_captions(tmp_path / "captions.csv")
    output = tmp_path / "tags.parquet"
    code, out, err = vidcap(capsys, "tag", captions, "--key", "objects", "--key", "actions", "--output", output,
                            "--model", tiny, "--max-new-tokens", MAX_NEW, "--batch-size", 3)
    assert code == 0, out + err[-3000:]
    table = pq.read_table(output)
    assert table.schema.field("objects").type == pa.list_(pa.string())
    assert table.schema.field("actions").type == pa.list_(pa.string())
    assert table["path"].to_pylist() == [f"clip_{i:03d}.mp4" for i in range(len(CAPTIONS))]
    config = json.loads((tmp_path / "tags.run" / "config.json").read_text())
    assert config["task"]["settings"]["keys"] == ["objects", "actions"]
    assert config["engine"]["name"] == "hf-text"
    # the random model never answers a JSON object: each answered row is an error that keeps its answer
    for row in table.to_pylist():
        if row["status"] != "skipped":
            assert row["status"] == "error" and row["tag_answer"] and row["error"].startswith("unparsable answer")


def test_user_errors_are_one_line(tmp_path, tiny, capsys):
    captions = write_captions(tmp_path / "captions.csv")
    out_csv = tmp_path / "o.csv"
    cases = [
        (["--output", out_csv, "--text-column", "caption"], "no 'caption' column to draw tags from"),
        (["--output", out_csv, "--output-prefix", tmp_path / "p"], "either --output OUT or --output-prefix P"),
        ([], "either --output OUT or --output-prefix P"),
        (["--output", out_csv, "--engine", "noop"], "runs on hf (a chat LLM) or openai"),
        (["--output", out_csv, "--prompt-file", tmp_path / "missing.txt"], "no such file"),
        (["--output", out_csv, "--key", "objects", "--key", "objects"], "given twice"),
        (["--output", out_csv, "--model", tmp_path / "nowhere"], "cannot load the tokenizer"),
    ]
    for extra, message in cases:
        argv = ["tag", captions, *extra]
        if "--model" not in extra:
            argv += ["--model", tiny]
        code, out, err = vidcap(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (extra, err[-2000:])
        assert len(err.strip().splitlines()) == 1 or "RANDOM-WEIGHT" in err, err


# -- the OpenAI-compatible engine against the test server ------------------------------------------------
API_CAPTIONS = [f"caption {i}: a {c} number{i} scene" for i, c in
                enumerate(["red", "blue", "green", "grey", "pink", "black", "white", "gold"] * 5)]
API_CAPTIONS[6] = ""
PROSE = 11  # the server answers prose for this one, every time: an error row, retried, then given up
REFUSED = 17  # refused on its first attempt: an error row that `resume` then tags
FAULT_BY_ROW = {1: "429", 2: "500", 3: "drop", 4: "malformed", 5: "503", 9: "not_completion", 13: "slow"}


def row_of(prompt: str) -> int:
    return int(caption_of(prompt).split(":")[0].split()[1])


def faults(info: RequestInfo) -> str | None:
    if info.attempt != 1:
        return None
    row = row_of(info.prompt)
    return "refusal" if row == REFUSED else FAULT_BY_ROW.get(row)


def answer(prompt: str) -> str:
    if row_of(prompt) == PROSE:
        return "The video shows a scene with some colours in it."
    return json.dumps(tags_for(caption_of(prompt)))


@pytest.mark.timeout(300)
def test_every_row_gets_exactly_its_own_tags_from_the_api(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-tags")
    manifest = tmp_path / "captions.csv"
    write_captions(manifest, API_CAPTIONS)
    output = tmp_path / "tags.csv"
    with FakeOpenAIServer(api_key="sk-test-tags", latency_s=0.3, faults=faults, text_answer=answer,
                          slow_s=3.0) as server:
        argv = ["tag", manifest, "--output", output, "--engine", "openai", "--model", "gpt-4o", "--api-base",
                server.base_url, "--concurrency", 8, "--batch-size", 16, "--shards", 2, "--request-timeout", 1,
                "--request-attempts", 4, "--max-attempts", 2]
        code, out, err = vidcap(capsys, *argv)
        assert code == 0, out + err[-3000:]
        assert server.max_in_flight >= 4  # batched and concurrent
        sent = [caption_of(info.prompt) for _, info in server.log]
        assert "" not in sent  # a skipped row is never sent
        rows = read_csv(output)
        check_api_rows(rows, refused_ok=False)

        code, out, err = vidcap(capsys, "resume", tmp_path / "tags.run", "--wait")
        assert code == 0 and "2 remaining" in out, out + err[-2000:]  # the prose and the refused rows
        code, out, err = vidcap(capsys, "merge", tmp_path / "tags.run", "--output", tmp_path / "again.parquet")
        assert code == 0, out + err[-2000:]
        rows = [dict(r, objects=", ".join(r["objects"] or [])) for r in
                pq.read_table(tmp_path / "again.parquet").to_pylist()]
        check_api_rows(rows, refused_ok=True)
        assert rows[PROSE]["failures"] == 2 and rows[REFUSED]["failures"] == 1


def check_api_rows(rows: list[dict[str, Any]], refused_ok: bool) -> None:
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(len(API_CAPTIONS))]
    for i, row in enumerate(rows):
        if i == 6:
            assert row["status"] == "skipped", row
        elif i == PROSE:
            assert row["status"] == "error" and row["error"].startswith("unparsable answer: no list of tags"), row
            assert row["tag_answer"] == "The video shows a scene with some colours in it."
        elif i == REFUSED and not refused_ok:
            assert row["status"] == "error" and row["error"].startswith("refused: "), row
        else:
            assert row["status"] == "ok", row
            assert row["objects"] == ", ".join(tags_for(API_CAPTIONS[i])), row
            assert f"number{i}" in row["objects"].split(", ")


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_tag_as_a_slurm_job_array_then_resume(tmp_path, tiny, alone, capsys, slurm_job_env):
    import subprocess

    captions = write_captions(tmp_path / "captions.csv")
    output = tmp_path / "tags.csv"
    run = RunDir.at(tmp_path / "tags.run")
    slurm = ["--executor", "slurm", "--cpus-per-task", 1, "--mem-gb", 2, "--wait-timeout", 400]
    try:
        code, out, err = vidcap(capsys, "tag", captions, "--output", output, "--model", tiny, "--shards", 2,
                                "--batch-size", 3, "--max-new-tokens", MAX_NEW, "--max-attempts", 2, *slurm)
        assert code == 0, out + err[-3000:]
        assert "submitted 2 shard tasks as Slurm job array" in out
        rows = read_csv(output)
        check_rows(rows, alone)
        failed = [r["path"] for r in rows if r["status"] == "error"]

        code, out, err = vidcap(capsys, "resume", run.root, "--wait", "--wait-timeout", 400)
        assert code == 0 and f"{len(failed)} remaining" in out, out + err[-3000:]
        if failed:
            assert "reopened" in out and "Slurm job array" in out
        code, out, err = vidcap(capsys, "merge", run.root, "--output", tmp_path / "again.csv")
        assert code == 0, out + err[-2000:]
        again = read_csv(tmp_path / "again.csv")
        check_rows(again, alone)
        assert [int(r["failures"]) for r in again if r["status"] == "error"] == [2] * len(failed)
        keys = [k for i in range(run.num_shards) for k in read_results(run, i)["key"].to_pylist()]
        assert sorted(set(keys)) == sorted(r["path"] for r in rows)
        for i in EMPTY:
            assert keys.count(f"clip_{i:03d}.mp4") == 1
    finally:
        jobs = run.latest_jobs().values() if run.jobs_path.exists() else []
        if jobs:
            subprocess.run(["scancel", *{j.split("_")[0] for j in jobs}], timeout=30, check=False)
