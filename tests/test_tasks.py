"""The tasks framework: a new task (a text task with a list column) and a new engine, registered by a line
each, run through the unchanged worker, result store and reducers."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.engines import ENGINES
from vidcap.errors import UserError
from vidcap.manifest.io import read_table, text_as_lists
from vidcap.manifest.reduce_run import merge_run, remaining_run
from vidcap.manifest.split import split
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.tasks import TASKS
from vidcap.tasks.spec import SourceSettings, TaskSpec, freeze_spec, load_spec
from vidcap.worker import run_shard
from task_fixtures import EchoSettings, WordsSettings


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS, "words", "task_fixtures:WordsTask")
    monkeypatch.setitem(ENGINES, "echo", "task_fixtures:EchoEngine")


def text_run(tmp_path, texts: list[str | None], engine: str = "echo") -> RunDir:
    manifest = tmp_path / "captions.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([[f"r{i}", t if t is not None else ""] for i, t in enumerate(texts)])
    run = RunDir.at(tmp_path / "run")
    split(manifest, run, shards=min(2, len(texts)), key="id")
    freeze_spec(run, TaskSpec(task="words", settings=WordsSettings(), engine=engine,
                              engine_settings=EchoSettings() if engine == "echo" else None, batch_size=2,
                              source=SourceSettings(readers=0)))
    return run


def test_a_text_task_runs_through_the_worker_store_and_reducers(tmp_path, registered) -> None:
    texts = ["a red car", "one", "", "please refuse this", "two words"]
    run = text_run(tmp_path, texts)
    for index in range(2):
        outcome = run_shard(run, index, progress=False)
        assert outcome.finished
    rows = {r["key"]: r for i in range(2) for r in read_results(run, i).to_pylist()}
    assert rows["r0"]["words"] == ["a", "red", "car"] and rows["r0"]["count"] == 3 and rows["r0"]["status"] == "ok"
    assert rows["r1"]["words"] == ["one"]
    assert rows["r2"]["status"] == "skipped" and rows["r2"]["error"] == "no text in column 'text'"
    assert rows["r3"]["status"] == "error" and rows["r3"]["error"] == "the answer contains 'refuse'"
    assert rows["r3"]["words"] is None
    # the engine's figures never replace the store's or the task's columns, but do land beside them
    assert all(r["key"] == k and r["seconds"] >= 0 for k, r in rows.items())
    assert rows["r4"]["cost_usd"] == 0.25 and rows["r4"]["generated_tokens"] == 2
    # billed for every answer, the one the task refused too; not for the row with no text
    assert run.read_stats(0)["cost_usd"] + run.read_stats(1)["cost_usd"] == pytest.approx(0.25 * 4)

    counts = merge_run(run, tmp_path / "out.parquet")
    assert (counts.ok, counts.error, counts.skipped) == (3, 1, 1)
    merged = pq.read_table(tmp_path / "out.parquet")
    assert merged.schema.field("words").type == pa.list_(pa.string())
    assert merged.column("words").to_pylist() == [["a", "red", "car"], ["one"], None, None, ["two", "words"]]
    assert merged.column("id").to_pylist() == [f"r{i}" for i in range(5)]  # manifest order

    merge_run(run, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as f:
        text_rows = list(csv.DictReader(f))
    assert text_rows[0]["words"] == "a, red, car" and text_rows[4]["words"] == "two, words"
    back = text_as_lists(read_table(tmp_path / "out.csv"), ["words"])
    assert back.column("words").to_pylist()[:2] == [["a", "red", "car"], ["one"]]

    remaining_run(run, tmp_path / "left.csv")
    with open(tmp_path / "left.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["r2", "r3"]  # no `ok` result: skipped rows too


def test_the_spec_is_stored_per_section_and_read_back(tmp_path, registered) -> None:
    run = text_run(tmp_path, ["x"])
    config = json.loads(run.config_path.read_text())
    assert config["task"]["name"] == "words" and config["task"]["settings"] == {"text_column": "text",
                                                                                "prompt": "List the words."}
    assert config["engine"] == {"name": "echo", "settings": {"upper": False}}
    assert "job" not in config
    assert load_spec(run) == TaskSpec(task="words", settings=WordsSettings(), engine="echo",
                                      engine_settings=EchoSettings(), batch_size=2, source=SourceSettings(readers=0))


def test_an_engine_that_cannot_read_the_tasks_source_is_refused(registered) -> None:
    with pytest.raises(UserError, match="engine 'hf' cannot read the text the words task gives it"):
        TaskSpec(task="words", engine="hf")
    with pytest.raises(UserError, match="cannot read the frames"):
        TaskSpec(task="caption", engine="echo")


def test_a_text_task_needs_no_path_column_and_no_prefetch(tmp_path, registered) -> None:
    run = text_run(tmp_path, ["just text"], engine="noop")
    assert "path" not in run.load_config()["manifest"]["columns"]
    assert run_shard(run, 0, progress=False).finished
    (row,) = read_results(run, 0).to_pylist()
    assert row["status"] == "ok" and row["words"][:3] == ["[noop", "engine:", "no"]


def test_resume_continues_whatever_task_the_run_holds(tmp_path, registered, capsys) -> None:
    from vidcap.cli import main

    run = text_run(tmp_path, ["a b", "c", "d e f"])
    assert main(["resume", str(run.root)]) == 0
    assert "0 of 3 rows done (words), 3 remaining" in capsys.readouterr().out  # merged before it ran
    assert main(["resume", str(run.root)]) == 0
    assert "3 of 3 rows done (words), 0 remaining" in capsys.readouterr().out
    merged = pq.read_table(run.root / "merged.parquet")
    assert merged.column("words").to_pylist() == [["a", "b"], ["c"], ["d", "e", "f"]]


@pytest.mark.parametrize("engine", ["echo", "noop"])
def test_merged_schema_is_fixed_by_the_config_whatever_has_results(tmp_path, registered, engine) -> None:
    """merged.parquet has one schema with no results, some, and all: the task's declared columns, the store's
    typed columns and the engine's declared figures (issue 11 item 9: missing columns were typed as text)."""
    run = text_run(tmp_path, ["a red car", "one", "two words", "three more words"], engine=engine)
    schemas = []
    for ran in (None, 0, 1):
        if ran is not None:
            assert run_shard(run, ran, progress=False).finished
        merge_run(run, tmp_path / f"merged-{ran}.parquet")
        schemas.append(pq.read_schema(tmp_path / f"merged-{ran}.parquet").remove_metadata())
    assert schemas[0] == schemas[1] == schemas[2], schemas
    schema = schemas[0]
    assert schema.names[:3] == ["id", "text", "_row"] or schema.names[:2] == ["id", "text"]
    assert schema.field("words").type == pa.list_(pa.string()) and schema.field("count").type == pa.int64()
    assert schema.field("seconds").type == pa.float64() and schema.field("prompt_tokens").type == pa.int64()
    assert schema.field("failures").type == pa.int64()
    assert ("cost_usd" in schema.names) == (engine == "echo")  # declared by the echo engine only
    if engine == "echo":
        assert schema.field("cost_usd").type == pa.float64()
        merged = pq.read_table(tmp_path / "merged-1.parquet")
        assert merged.column("cost_usd").to_pylist() == [0.25] * 4
