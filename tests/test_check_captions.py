"""`vidcap check-captions` on CSV and Parquet files of any captioner: flags column, counts, bad input."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.cli import main

ROWS = [
    ("a.mp4", "A golden retriever runs along a sandy beach at sunset while small waves roll in.", "stop", "30"),
    ("b.mp4", "", "stop", "0"),
    ("c.mp4", "the the the the the the the the the the the the the the", "length", "64"),
    ("d.mp4", "The image shows a bowl of fruit on a white table in a bright room.", "stop", "20"),
    ("e.mp4", "A cat.", "stop", "3"),
    ("f.mp4", "ĠA Ġdog Ġruns Ġon Ġthe Ġbeach", "stop", "12"),
    ("g.mp4", "A man, a plan, a canal: \"Panama\", he says,\nand walks on along the quay at dusk.", "", "64"),
]


def write_csv(path, rows=ROWS, header=("path", "text", "finish", "tokens")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def run(capsys, *args):
    code = main(["check-captions", *map(str, args), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_csv_to_csv_adds_flags_and_counts(tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv")
    code, out, err = run(capsys, source, "--output", tmp_path / "out.csv", "--tokens-column", "tokens",
                         "--max-new-tokens", "64")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert [r["path"] for r in rows] == [r[0] for r in ROWS]  # every row, in order
    assert [r["text"] for r in rows] == [r[1] for r in ROWS]  # text comes back as it went in
    assert [r["finish"] for r in rows] == [r[2] for r in ROWS]
    assert [r["flags"] for r in rows] == ["", "empty", "loop, truncated", "wrong_medium", "too_short",
                                          "not_language", "truncated"]
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line and line[0] != "-"}
    assert table["loop"][0] == "1" and table["truncated"][0] == "2" and table["empty"][0] == "1"
    assert table["clean"][0] == "1" and table["total"][0] == "7"
    assert table["any"] == ["flag", "6", "85.71%"]
    assert "prompt_echo (no --prompt" in out


def test_parquet_output_has_a_list_column_and_finish_reason(tmp_path, capsys):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": [r[0] for r in ROWS], "caption": [r[1] for r in ROWS],
                             "finish_reason": [r[2] or None for r in ROWS],
                             "n": pa.array([int(r[3]) for r in ROWS], pa.int32())}), source)
    code, out, err = run(capsys, source, "--output", tmp_path / "out.parquet", "--text-column", "caption",
                         "--finish-column", "finish_reason", "--media", "image")
    assert code == 0, err
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("flags").type == pa.list_(pa.string())
    assert table.schema.field("n").type == pa.int32()  # input types kept
    flags = table["flags"].to_pylist()
    assert flags[2] == ["loop", "truncated"]
    assert flags[3] == []  # an image caption that says "the image" is right
    assert flags[6] == []  # no finish reason: not truncated, whatever the count


def test_prompt_echo_from_a_preset_and_a_rerun_replaces_flags(tmp_path, capsys):
    rows = [("a.mp4", "Describe the video in a few sentences: who or what is in it and what happens.", "", ""),
            ("b.mp4", "A dog runs along the beach while the camera follows it at a low angle.", "", "")]
    source = write_csv(tmp_path / "in.csv", rows)
    code, _, err = run(capsys, source, "--output", tmp_path / "once.csv", "--prompt", "video")
    assert code == 0, err
    code, _, err = run(capsys, tmp_path / "once.csv", "--output", tmp_path / "twice.parquet", "--checks", "loop")
    assert code == 0, err
    twice = pq.read_table(tmp_path / "twice.parquet")
    assert twice.column_names == ["path", "text", "finish", "tokens", "flags"]
    assert twice["flags"].to_pylist() == [[], []]
    once = list(csv.DictReader(open(tmp_path / "once.csv", encoding="utf-8")))
    assert [r["flags"] for r in once] == ["prompt_echo", ""]


def test_header_only_file_gives_a_header_only_output(tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv", [])
    code, out, err = run(capsys, source, "--output", tmp_path / "out.parquet")
    assert code == 0, err
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 0 and table.column_names[-1] == "flags"
    assert "total" in out


@pytest.mark.parametrize("extra, message", [
    (["--text-column", "caption"], "in.csv: no column 'caption' (columns: path, text, finish, tokens)"),
    (["--tokens-column", "tokens"], "--tokens-column needs --max-new-tokens"),
    (["--checks", "loop,echo"], "--checks: unknown flag(s) echo"),
    (["--check-loop-coverage", "2"], "--check-loop-coverage must be a share in (0, 1], got 2.0"),
    (["--prompt", "nope"], "unknown prompt 'nope'"),
    (["--tokens-column", "text", "--max-new-tokens", "8"], "column 'text': not a whole number of tokens"),
])
def test_bad_input_is_one_line(tmp_path, capsys, extra, message):
    source = write_csv(tmp_path / "in.csv")
    code, out, err = run(capsys, source, "--output", tmp_path / "out.csv", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "out.csv").exists()
    assert not list(tmp_path.glob(".out.csv*"))  # no temporary file left behind


def test_output_may_not_overwrite_input(tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv")
    code, _, err = run(capsys, source, "--output", source)
    assert code == 2 and "would overwrite the input" in err
    assert open(source, encoding="utf-8").read().startswith("path,text")


def test_unknown_output_type_refused_before_reading(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path / "missing.csv", "--output", tmp_path / "out.txt")
    assert code == 2 and "out.txt: unsupported file type" in err
    code, _, err = run(capsys, tmp_path / "missing.csv", "--output", tmp_path / "out.csv")
    assert code == 2 and "missing.csv: no such file" in err


def test_drop_flagged_writes_a_clean_file(tmp_path, capsys):
    source = write_csv(tmp_path / "in.csv")
    code, out, err = run(capsys, source, "--output", tmp_path / "clean.csv", "--drop-flagged")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "clean.csv", encoding="utf-8")))
    assert [r["path"] for r in rows] == ["a.mp4", "g.mp4"] and {r["flags"] for r in rows} == {""}
    assert "left out" in out and out.count("\n") > 5
    code, out, err = run(capsys, source, "--output", tmp_path / "some.parquet", "--drop-flagged", "empty,too_short")
    assert code == 0, err
    assert pq.read_table(tmp_path / "some.parquet")["path"].to_pylist() == ["a.mp4", "c.mp4", "d.mp4", "f.mp4",
                                                                            "g.mp4"]
    code, out, err = run(capsys, source, "--output", tmp_path / "x.csv", "--drop-flagged", "loops")
    assert code == 2 and "--drop-flagged: unknown flag(s) loops" in err


def test_workers_give_the_same_file(tmp_path, capsys):
    rows = [(f"{i}.mp4", text, finish, tokens) for i in range(40) for (_, text, finish, tokens) in ROWS]
    source = tmp_path / "in.parquet"  # Parquet: read in batches of batch_rows, so several go to the workers
    pq.write_table(pa.table({name: [r[i] for r in rows] for i, name in enumerate(["path", "text", "finish", "n"])}),
                   source)
    from vidcap.checks import CheckContext, CheckSettings
    from vidcap.checks.table import Columns, check_file

    columns = Columns(text="text", finish_reason="finish")
    one = check_file(source, tmp_path / "one.parquet", CheckSettings(), columns, CheckContext(is_video=True),
                     progress=False, batch_rows=17)
    three = check_file(source, tmp_path / "three.parquet", CheckSettings(), columns, CheckContext(is_video=True),
                       progress=False, batch_rows=17, workers=3)
    assert one == three and one.rows == len(rows)
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "three.parquet"))
