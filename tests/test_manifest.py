"""Manifest reading: Open-Sora CSVs kept exactly, and every kind of bad input as a one-line error."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.cli import main
from vidcap.errors import UserError
from vidcap.manifest.io import read_manifest

TRICKY = (
    "\ufeffpath,text,num_frames,fps\n"
    '"videos/a,b.mp4","she said ""hi""\nthen left",120,29.97\n'
    "videos/ünï/çödé.mp4,日本語のキャプション,25,25\n"
    "videos/c.mp4,,7,\n"
)


def run_cli(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "vidcap", *argv], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_open_sora_csv_values_are_kept_exactly(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(TRICKY, encoding="utf-8")
    table = read_manifest(path)
    assert table.column_names == ["path", "text", "num_frames", "fps"]  # BOM stripped from the first name
    rows = table.to_pylist()
    assert rows[0] == {"path": "videos/a,b.mp4", "text": 'she said "hi"\nthen left', "num_frames": "120", "fps": "29.97"}
    assert rows[1]["path"] == "videos/ünï/çödé.mp4" and rows[1]["text"] == "日本語のキャプション"
    assert rows[2] == {"path": "videos/c.mp4", "text": "", "num_frames": "7", "fps": ""}


def test_parquet_keeps_types_and_other_key(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "path": ["a.mp4", "a.mp4"], "fps": [24.0, 30.0]}), path)
    table = read_manifest(path, key="id")
    assert table.schema.field("fps").type == pa.float64()
    with pytest.raises(UserError, match="duplicate 'path'"):
        read_manifest(path)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.csv", None, "missing.csv: no such file"),
        ("empty.csv", b"", "empty.csv: empty file"),
        ("header.csv", b"path,text\n", "header.csv: no rows"),
        ("nokey.csv", b"video,text\na.mp4,x\n", "nokey.csv: no column 'path' (columns: video, text); name the key column with --key"),
        ("latin1.csv", "path,text\na.mp4,ok\nb.mp4,caf\xe9\n".encode("latin-1"), "latin1.csv: not UTF-8 text (line 3, byte 0xe9)"),
        ("ragged.csv", b"path,text\na.mp4,x\nb.mp4,y,z\n", "ragged.csv: line 3: expected 2 fields, got 3"),
        ("list.txt", b"path\na.mp4\n", "list.txt: unsupported file type"),
        ("emptykey.csv", b"path,text\na.mp4,x\n,y\n", "emptykey.csv: row 2: empty 'path'"),
        ("dupcols.csv", b"path,text,text\na.mp4,x,y\n", "dupcols.csv: line 1: duplicate column names ['text']"),
        ("broken.parquet", b"PAR1 this is not parquet", "broken.parquet: unreadable Parquet file"),
    ],
)
def test_bad_manifest_is_one_line_error(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code = main(["split", str(path), "--run", str(tmp_path / "run"), "--shards", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_duplicate_keys_listed_and_dedup_first(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    lines = ["path,n"] + [f"v{i % 7}.mp4,{i}" for i in range(20)]
    path.write_text("\n".join(lines) + "\n")
    assert main(["split", str(path), "--run", str(tmp_path / "r"), "--shards", "2"]) == 2
    err = capsys.readouterr().err
    assert "duplicate 'path' values: 'v0.mp4' x3, 'v1.mp4' x3, 'v2.mp4' x3, 'v3.mp4' x3, 'v4.mp4' x3 and 2 more" in err
    assert "13 extra rows; --dedup first keeps the first" in err
    assert main(["split", str(path), "--run", str(tmp_path / "r"), "--shards", "2", "--dedup", "first"]) == 0
    table = read_manifest(path, dedup="first")
    assert table.to_pydict() == {"path": [f"v{i}.mp4" for i in range(7)], "n": [str(i) for i in range(7)]}


def test_real_binary_prints_no_traceback(tmp_path):
    code, out, err = run_cli("split", str(tmp_path / "nope.csv"), "--run", str(tmp_path / "r"), "--shards", "1")
    assert code == 2
    assert err.strip().splitlines() == [f"vidcap split: error: {tmp_path / 'nope.csv'}: no such file"]


@pytest.mark.parametrize("suffix, codec", [(".csv.gz", "gzip"), (".csv.bz2", "bz2"), (".csv.zst", "zstd")])
def test_compressed_csv_reads_and_names_the_bad_line(tmp_path, suffix, codec):
    """Every CSV compression the name may say is decompressed, also where a bad line is looked for (a .zst
    manifest with a ragged line was reported as 'not UTF-8 text')."""
    import pyarrow as pa

    from vidcap.manifest.io import read_manifest

    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    for path, text in ((good, b"path,x\na.mp4,1\nb.mp4,2\n"), (bad, b"path,x\na.mp4,1\nb.mp4,2,3\nc.mp4,4\n")):
        with pa.CompressedOutputStream(str(path), codec) as f:
            f.write(text)
    assert read_manifest(good).column("path").to_pylist() == ["a.mp4", "b.mp4"]
    with pytest.raises(UserError, match=r"line 3: expected 2 fields, got 3"):
        read_manifest(bad)


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.parquet"])
def test_table_writer_encoded_in_threads_writes_the_bytes_that_write_writes(tmp_path, name):
    """A large output is formatted in threads (`encode`, any order) and appended in order (`write_encoded`):
    the file is the one `write` makes, quoting, nulls, list columns (as text in CSV) and compression included."""
    from concurrent.futures import ThreadPoolExecutor

    from vidcap.manifest.io import TableWriter

    table = pa.table({
        "path": ["a,b.mp4", 'say "hi".mp4', "line\nbreak.mp4", "ünï.mp4", None, ""] * 50,
        "frames": pa.array([1, None, 3, 4, 5, 6] * 50, pa.int64()),
        "tags": pa.array([["dog", "beach"], None, [], ["a b"], ["x"], ["y", "z"]] * 50),
    })
    pieces = [table.slice(i, 37) for i in range(0, table.num_rows, 37)]
    with TableWriter(tmp_path / f"a-{name}", table.schema) as writer:
        for piece in pieces:
            writer.write(piece)
    with TableWriter(tmp_path / f"b-{name}", table.schema) as writer, ThreadPoolExecutor(4) as pool:
        for encoded in pool.map(writer.encode, pieces):
            writer.write_encoded(encoded)
    if name.endswith(".parquet"):
        assert pq.read_table(tmp_path / f"b-{name}").equals(pq.read_table(tmp_path / f"a-{name}"))
    else:
        assert (tmp_path / f"b-{name}").read_bytes() == (tmp_path / f"a-{name}").read_bytes()
