"""The tag task's chat model under tensor parallelism (`vidcap tag --tp-size 2`) on CPU with gloo: the model
is really split in two (each rank holds half the query projection) and every row gets the answer of a
one-process run. The tiny model is 128 wide, since DeepSpeed shards in blocks of 64."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from test_tag_runs import CAPTIONS, EMPTY, vidcap, write_captions  # noqa: E402

from vidcap.fixtures.tiny_text_model import make_tiny_text_model  # noqa: E402
from vidcap.run import RunDir  # noqa: E402

WIDTH = 128


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["transformers", "deepspeed"])
def test_tag_with_tp2_gives_the_answers_of_one_process(tmp_path, capsys, backend):
    if backend == "transformers":
        pytest.importorskip("accelerate")
    model = make_tiny_text_model(tmp_path / "tiny128", width=WIDTH)
    captions = write_captions(tmp_path / "captions.csv")
    common = ["--model", model, "--max-new-tokens", 12, "--batch-size", 4, "--device", "cpu", "--shards", 1]
    code, out, err = vidcap(capsys, "tag", captions, "--output", tmp_path / "tp1.csv", *common)
    assert code == 0, out + err[-3000:]
    code, out, err = vidcap(capsys, "tag", captions, "--output", tmp_path / "tp2.csv", *common, "--tp-size", 2,
                            "--tp-backend", backend)
    assert code == 0, out + err[-3000:]
    one = list(csv.DictReader(open(tmp_path / "tp1.csv", encoding="utf-8")))
    two = list(csv.DictReader(open(tmp_path / "tp2.csv", encoding="utf-8")))
    assert [r["path"] for r in two] == [r["path"] for r in one]
    for i, (a, b) in enumerate(zip(one, two)):
        assert (b["status"], b["tag_answer"], b["objects"]) == (a["status"], a["tag_answer"], a["objects"]), i
        if i not in EMPTY:
            assert b["tag_answer"], b
    assert len(one) == len(CAPTIONS)
    stats = RunDir.at(tmp_path / "tp2.run").read_stats(0)
    engine = stats["engine"]
    assert engine["tp_size"] == 2 and engine["tp_backend"] == backend
    assert engine["q_proj_rows"] == WIDTH // 2, engine  # each rank holds half: really split
    single = RunDir.at(tmp_path / "tp1.run").read_stats(0)["engine"]
    assert single["q_proj_rows"] == WIDTH
