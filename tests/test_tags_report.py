"""`vidcap tags-report`: streaming counts of a tag column (Parquet lists or CSV text), table, chart, CSV."""

from __future__ import annotations

import csv
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vidcap.cli import main
from vidcap.tags.report import chart_size, count_tags, draw_chart

VOCAB = ["dog", "cat", "red car", "street lamp", "woman", "tree", "bicycle", "river",
         "a very long tag that someone's model wrote out in full, with many words in it"]


def rows_of_tags(n: int, seed: int = 0) -> list[list[str] | None]:
    rng = random.Random(seed)
    rows: list[list[str] | None] = [rng.sample(VOCAB[:-1], rng.randint(0, 4)) for _ in range(n)]
    rows[5] = ["dog", VOCAB[-1].replace(",", "")]
    rows[7] = None  # an error row
    return rows


def write_both(tmp_path, rows):
    statuses = ["error" if r is None else "ok" for r in rows]
    table = pa.table({"path": [f"v{i}.mp4" for i in range(len(rows))],
                      "objects": pa.array(rows, pa.list_(pa.string())), "status": statuses})
    pq.write_table(table, tmp_path / "out.parquet", row_group_size=100)
    with open(tmp_path / "out.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "objects", "status"])
        for i, (r, s) in enumerate(zip(rows, statuses)):
            writer.writerow([f"v{i}.mp4", ", ".join(r or []), s])
    return tmp_path / "out.parquet", tmp_path / "out.csv"


def test_counts_equal_a_plain_count_in_parquet_and_csv_and_any_batch_size(tmp_path):
    rows = rows_of_tags(1000)
    expected = Counter(tag for r in rows if r for tag in r)
    parquet, text = write_both(tmp_path, rows)
    for path in (parquet, text):
        for batch_rows in (7, 1 << 16):
            result = count_tags(path, "objects", batch_rows=batch_rows)
            assert result.counts == expected, (path, batch_rows)
            assert result.rows == 1000 and result.rows_null == 1
            assert result.rows_empty == sum(1 for r in rows if r == [])
            assert result.rows_tagged == sum(1 for r in rows if r)


def test_command_prints_table_writes_counts_and_a_readable_chart(tmp_path, capsys):
    rows = rows_of_tags(500)
    parquet, _ = write_both(tmp_path, rows)
    png, counts = tmp_path / "chart.png", tmp_path / "counts.csv"
    assert main(["tags-report", str(parquet), "--key", "objects", "--top", "5", "--png", str(png),
                 "--csv", str(counts)]) == 0
    out = capsys.readouterr().out
    expected = Counter(tag for r in rows if r for tag in r)
    top = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    for tag, count in top:
        assert f"{tag}  " in out and f"{count:,}" in out
    assert "4 more" in out
    with open(counts, newline="") as f:
        written = {r["tag"]: int(r["count"]) for r in csv.DictReader(f)}
    assert written == dict(expected)

    image = Image.open(png)
    image.load()  # decodes
    assert image.format == "PNG" and image.size == chart_size(5)
    assert_labels_inside(np.asarray(image.convert("L")))


def test_chart_of_long_labels_keeps_them_inside_the_image(tmp_path):
    rows = [["x" * 30 + " " + "y" * 30, "dog"]] * 3 + [["cat"]]
    parquet, _ = write_both(tmp_path, rows + [[]] * 8)
    png = tmp_path / "long.png"
    result = count_tags(parquet, "objects")
    assert draw_chart(result, png, top=50) == chart_size(3)
    image = np.asarray(Image.open(png).convert("L"))
    assert image.shape == (chart_size(3)[1], chart_size(3)[0])
    assert_labels_inside(image)


def assert_labels_inside(gray: np.ndarray) -> None:
    """Nothing is drawn on the image's outer edge (a cut label would touch it), and the labels are there:
    dark pixels left of the axis."""
    assert gray[:, :3].min() > 240 and gray[:, -3:].min() > 240
    assert gray[:3, :].min() > 240 and gray[-3:, :].min() > 240
    dark_columns = np.flatnonzero((gray < 128).any(axis=0))
    assert dark_columns[0] < gray.shape[1] // 3  # label text starts well left of the bars


def test_bad_input_is_one_line_errors(tmp_path, capsys):
    parquet, _ = write_both(tmp_path, rows_of_tags(20))
    assert main(["tags-report", str(parquet), "--key", "actions"]) == 2
    assert "no column 'actions'" in capsys.readouterr().err
    assert main(["tags-report", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["tags-report", str(parquet), "--top", "0"]) == 2
    assert "--top" in capsys.readouterr().err
    assert main(["tags-report", str(parquet), "--png", str(tmp_path / "chart.jpg")]) == 2
    assert "PNG" in capsys.readouterr().err
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"objects": [1, 2]}), numbers)
    assert main(["tags-report", str(numbers)]) == 2
    assert "not tags" in capsys.readouterr().err


def test_file_with_no_tags_still_reports(tmp_path, capsys):
    parquet, _ = write_both(tmp_path, [[], [], None])
    png = tmp_path / "none.png"
    assert main(["tags-report", str(parquet), "--png", str(png)]) == 0
    assert "no tags to show" in capsys.readouterr().out
    assert Image.open(png).size == chart_size(0)
