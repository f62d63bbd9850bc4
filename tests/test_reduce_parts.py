"""The Open-Sora reducer forms: merge PART... and remaining MANIFEST --done DONE."""

from __future__ import annotations

import csv
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.errors import UserError
from vidcap.manifest import keyhash, reduce_parts
from vidcap.manifest.buckets import bucket_of
from vidcap.manifest.keyhash import KeySet, hash_groups, key_hash
from vidcap.cli import main
from vidcap.manifest.reduce_parts import merge_and_remaining, merge_parts, remaining_from_done
from vidcap.manifest.resolve import best_per_key

TINY = 1  # a memory budget that forces the bucketed (on-disk) path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture(params=["memory", "buckets"])
def budget(request):
    """Every semantic test runs on both paths: B = 1 in memory, and B > 1 through files on disk."""
    return reduce_parts.DEFAULT_BUDGET if request.param == "memory" else TINY


def test_duplicates_across_parts_kept_once_later_part_wins(tmp_path, budget):
    a = write_csv(tmp_path / "DATA_caption_part0.csv", ["path", "text"], [["v1", "one"], ["v2", "two"]])
    b = write_csv(tmp_path / "DATA_caption_part1.csv", ["path", "text"], [["v2", "two again"], ["v3", "three"]])
    counts = merge_parts([a, b], str(tmp_path / "out.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "out.csv") == [["path", "text"], ["v1", "one"], ["v2", "two again"], ["v3", "three"]]
    assert (counts.rows, counts.written, counts.ok) == (4, 3, 3)


def test_ok_beats_skipped_beats_error_whatever_the_order(tmp_path, budget):
    header = ["path", "text", "status"]
    a = write_csv(tmp_path / "a.csv", header, [["v1", "good", "ok"], ["v2", "", "error"], ["v3", "", "error"]])
    b = write_csv(tmp_path / "b.csv", header, [["v1", "", "error"], ["v2", "", "skipped"], ["v3", "", "error"]])
    counts = merge_parts([a, b], str(tmp_path / "out.csv"), memory_budget=budget)
    rows = read_rows(tmp_path / "out.csv")
    assert rows[1:] == [["v1", "good", "ok"], ["v2", "", "skipped"], ["v3", "", "error"]]
    assert (counts.ok, counts.skipped, counts.error) == (1, 1, 1)


def test_latest_row_wins_among_equals_within_a_part(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["v1", "old"], ["v2", "x"], ["v1", "new"]])
    merge_parts([a], str(tmp_path / "out.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "out.csv")[1:] == [["v1", "new"], ["v2", "x"]]


def test_output_in_order_of_first_appearance_across_parts(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["c", "1"], ["a", "2"]])
    b = write_csv(tmp_path / "b.csv", ["path", "text"], [["b", "3"], ["c", "4"], ["d", "5"], ["a", "6"]])
    merge_parts([a, b], str(tmp_path / "out.csv"), memory_budget=budget)
    assert [r[0] for r in read_rows(tmp_path / "out.csv")[1:]] == ["c", "a", "b", "d"]


def test_columns_are_the_union_and_parquet_keeps_types(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["v1", "one"]])
    b = str(tmp_path / "b.parquet")
    pq.write_table(pa.table({"path": ["v2"], "num_frames": pa.array([25], pa.int64()), "text": ["two"]}), b)
    merge_parts([a, b], str(tmp_path / "out.parquet"), memory_budget=budget)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["path", "text", "num_frames"]
    assert out.schema.field("num_frames").type == pa.int64()
    assert out.to_pylist() == [
        {"path": "v1", "text": "one", "num_frames": None},
        {"path": "v2", "text": "two", "num_frames": 25},
    ]


def test_a_part_without_status_is_ok_in_ranking_and_in_the_merged_file(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["v1", "caption"]])
    b = write_csv(tmp_path / "b.csv", ["path", "text", "status"], [["v1", "", "error"], ["v2", "c2", "ok"]])
    merge_parts([a, b], str(tmp_path / "out.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "out.csv") == [["path", "text", "status"], ["v1", "caption", "ok"], ["v2", "c2", "ok"]]
    manifest = write_csv(tmp_path / "DATA.csv", ["path"], [["v1"], ["v2"], ["v3"]])
    remaining_from_done(manifest, str(tmp_path / "out.csv"), str(tmp_path / "rest.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "rest.csv") == [["path"], ["v3"]]


def test_merge_agrees_with_best_per_key_on_random_results(tmp_path, budget):
    """The winner of each key is exactly the row resolve.best_per_key picks (the rule is shared)."""
    rng = random.Random(7)
    parts, rows = [], []
    for p in range(6):
        part_rows = [
            [f"k{rng.randrange(40)}", f"p{p}r{i}", rng.choice(["ok", "error", "skipped"])] for i in range(30)
        ]
        rows += part_rows
        parts.append(write_csv(tmp_path / f"part{p}.csv", ["path", "text", "status"], part_rows))
    merge_parts(parts, str(tmp_path / "out.csv"), memory_budget=budget)
    got = {r[0]: r[1] for r in read_rows(tmp_path / "out.csv")[1:]}
    table = pa.table({"path": [r[0] for r in rows], "text": [r[1] for r in rows], "status": [r[2] for r in rows]})
    expected = best_per_key(table, key="path")
    assert got == dict(zip(expected["path"].to_pylist(), expected["text"].to_pylist()))


def test_missing_part_is_a_one_line_error_naming_it_and_writes_nothing(tmp_path):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["v1", "one"]])
    missing = str(tmp_path / "DATA_caption_part7.csv")
    with pytest.raises(UserError) as err:
        merge_parts([a, missing], str(tmp_path / "out.csv"))
    assert missing in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["a.csv"]


def test_part_without_key_column_is_an_error_naming_it(tmp_path):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["v1", "one"]])
    b = write_csv(tmp_path / "b.csv", ["video", "text"], [["v2", "two"]])
    with pytest.raises(UserError, match=r"b\.csv: no column 'path'"):
        merge_parts([a, b], str(tmp_path / "out.csv"))


def test_empty_key_is_an_error_naming_part_and_row_and_leaves_no_files(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [["v1", "one"]])
    b = write_csv(tmp_path / "b.csv", ["path", "text"], [["v2", "two"], ["", "three"]])
    with pytest.raises(UserError, match=r"b\.csv: row 2: empty 'path'"):
        merge_parts([a, b], str(tmp_path / "out.csv"), memory_budget=budget)
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv"]  # no output, no temporary files


def test_other_key_column(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["id", "text"], [["1", "x"], ["2", "y"], ["1", "z"]])
    merge_parts([a], str(tmp_path / "out.csv"), key="id", memory_budget=budget)
    assert read_rows(tmp_path / "out.csv")[1:] == [["1", "z"], ["2", "y"]]


TRICKY = ["a,b", 'say "hi"', "two\nlines", "vidéo 東京 🎬", " padded ", ""]


def test_commas_quotes_newlines_and_non_ascii_survive(tmp_path, budget):
    keys = [f"/data/{t or 'empty'}.mp4" for t in TRICKY]
    manifest = write_csv(tmp_path / "DATA.csv", ["path", "note"], [[k, t] for k, t in zip(keys, TRICKY)])
    part = write_csv(tmp_path / "part.csv", ["path", "text"], [[k, t] for k, t in zip(keys[::2], TRICKY[::2])])
    merge_parts([part], str(tmp_path / "merged.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "merged.csv")[1:] == [[k, t] for k, t in zip(keys[::2], TRICKY[::2])]
    remaining_from_done(manifest, str(tmp_path / "merged.csv"), str(tmp_path / "rest.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "rest.csv") == [["path", "note"]] + [[k, t] for k, t in zip(keys[1::2], TRICKY[1::2])]


def test_remaining_with_done_without_status_counts_every_row(tmp_path, budget):
    manifest = write_csv(
        tmp_path / "DATA.csv", ["path", "num_frames", "fps"], [[f"v{i}", str(10 * i), "25"] for i in range(6)]
    )
    done = write_csv(tmp_path / "DATA_caption_part0.csv", ["path", "text"], [["v4", "x"], ["v1", "y"], ["zz", "w"]])
    counts = remaining_from_done(manifest, done, str(tmp_path / "rest.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "rest.csv") == [
        ["path", "num_frames", "fps"], ["v0", "0", "25"], ["v2", "20", "25"], ["v3", "30", "25"], ["v5", "50", "25"]
    ]
    assert (counts.rows, counts.ok, counts.written) == (6, 2, 4)


def test_remaining_with_status_counts_only_ok_rows(tmp_path, budget):
    manifest = write_csv(tmp_path / "DATA.csv", ["path"], [[f"v{i}"] for i in range(5)])
    done = str(tmp_path / "merged.parquet")
    statuses = ["ok", "error", None, "skipped"]
    texts = ["a", None, None, "d"]
    pq.write_table(pa.table({"path": ["v0", "v1", "v2", "v3"], "text": texts, "status": statuses}), done)
    remaining_from_done(manifest, done, str(tmp_path / "rest.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "rest.csv")[1:] == [["v1"], ["v2"], ["v3"], ["v4"]]


def test_remaining_from_several_done_files_keeps_manifest_order_and_types(tmp_path, budget):
    manifest = str(tmp_path / "DATA.parquet")
    ids = list(range(100, 0, -1))
    pq.write_table(pa.table({"path": pa.array(ids, pa.int64()), "fps": pa.array([i / 4 for i in ids])}), manifest)
    a = write_csv(tmp_path / "a.csv", ["path", "text"], [[str(i), "x"] for i in ids if i % 3 == 0])
    statuses = [[str(i), "ok" if i % 2 else "error"] for i in ids if i % 5 == 0]
    b = write_csv(tmp_path / "b.csv", ["path", "status"], statuses)
    remaining_from_done(manifest, [a, b], str(tmp_path / "rest.parquet"), memory_budget=budget)
    out = pq.read_table(tmp_path / "rest.parquet")
    assert out.schema == pq.read_schema(manifest).remove_metadata()
    assert out["path"].to_pylist() == [i for i in ids if i % 3 and not (i % 5 == 0 and i % 2)]
    assert out["fps"].to_pylist() == [i / 4 for i in out["path"].to_pylist()]


def test_remaining_done_without_key_column_is_an_error(tmp_path):
    manifest = write_csv(tmp_path / "DATA.csv", ["path"], [["v1"]])
    done = write_csv(tmp_path / "done.csv", ["video", "text"], [["v1", "x"]])
    with pytest.raises(UserError, match=r"done\.csv: no column 'path'"):
        remaining_from_done(manifest, done, str(tmp_path / "rest.csv"))


def test_merge_then_remaining_round_trip(tmp_path, budget):
    manifest = write_csv(tmp_path / "DATA.csv", ["path", "fps"], [[f"v{i}", "30"] for i in range(10)])
    p0 = write_csv(tmp_path / "p0.csv", ["path", "text", "status"], [["v1", "a", "ok"], ["v2", "", "error"]])
    p1 = write_csv(tmp_path / "p1.csv", ["path", "text", "status"], [["v2", "", "error"], ["v7", "c", "ok"]])
    merge_parts([p0, p1], str(tmp_path / "merged.csv"), memory_budget=budget)
    remaining_from_done(manifest, str(tmp_path / "merged.csv"), str(tmp_path / "rest.csv"), memory_budget=budget)
    assert [r[0] for r in read_rows(tmp_path / "rest.csv")[1:]] == [f"v{i}" for i in range(10) if i not in (1, 7)]


def _random_inputs(tmp_path, rng, parts=12, keys=3000):
    manifest_rows = [[f"/videos/{i:06d}-{rng.random():.6f}.mp4", str(rng.randrange(300)), "30"] for i in range(keys)]
    manifest = write_csv(tmp_path / "DATA.csv", ["path", "num_frames", "fps"], manifest_rows)
    names = []
    for p in range(parts):
        header = ["path", "text", "status"] if p % 2 else ["path", "text"]
        rows = []
        for i in range(400):
            row = [rng.choice(manifest_rows)[0], f"caption {p}-{i}, \"quoted\"\nline"]
            rows.append(row + [rng.choice(["ok", "error", "skipped"])] if p % 2 else row)
        names.append(write_csv(tmp_path / f"part{p:02d}.csv", header, rows))
    return manifest, names


def _spy(monkeypatch, name, calls):
    real = getattr(reduce_parts, name)
    monkeypatch.setattr(reduce_parts, name, lambda *a, **k: calls.append(name) or real(*a, **k))


def test_bucketed_merge_gives_exactly_the_in_memory_output(tmp_path, monkeypatch):
    """The flat-memory path is really taken (B > 1) and is byte-identical to B = 1."""
    _, parts = _random_inputs(tmp_path, random.Random(3))
    taken = []
    _spy(monkeypatch, "_merge_bucketed", taken)
    merge_parts(parts, str(tmp_path / "mem.csv"))
    assert taken == []
    merge_parts(parts, str(tmp_path / "disk.csv"), memory_budget=20_000)
    assert taken == ["_merge_bucketed"]
    assert (tmp_path / "mem.csv").read_bytes() == (tmp_path / "disk.csv").read_bytes()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # bucket folders removed


def test_remaining_gives_the_same_rows_on_all_three_paths(tmp_path, monkeypatch):
    """All in memory; DONE's keys held with the manifest streamed past them; both bucketed."""
    manifest, parts = _random_inputs(tmp_path, random.Random(4))
    merged = str(tmp_path / "merged.csv")
    merge_parts(parts, merged)
    calls = []
    _spy(monkeypatch, "_remaining_bucketed", calls)
    _spy(monkeypatch, "iter_batches", calls)
    keys = [r[0] for r in read_rows(merged)[1:]]
    held = sum(len(k.encode()) + 4 + reduce_parts.KEYSET_BYTES_PER_KEY for k in keys)  # DONE's keys + KeySet
    paths = {}
    for budget in (reduce_parts.DEFAULT_BUDGET, held + 1000, 20_000):
        calls.clear()
        remaining_from_done(manifest, merged, str(tmp_path / f"rest-{budget}.parquet"), memory_budget=budget)
        paths[budget] = calls.count("iter_batches"), "_remaining_bucketed" in calls
    # DONE is always streamed once; the manifest is streamed only when it does not fit, twice when bucketed
    # (keys to buckets, then the rows not done)
    assert list(paths.values()) == [(1, False), (2, False), (3, True)]
    tables = [pq.read_table(tmp_path / f"rest-{b}.parquet") for b in paths]
    assert tables[0].num_rows > 0 and all(t.equals(tables[0]) for t in tables)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


@pytest.mark.parametrize("budget", [reduce_parts.DEFAULT_BUDGET, 60_000, 20_000, TINY])
def test_fused_merge_and_remaining_writes_the_two_steps_bytes_without_reading_merged_back(
    tmp_path, monkeypatch, budget
):
    """In memory, and bucketed at three budgets: the same files as merge then remaining."""
    manifest, parts = _random_inputs(tmp_path, random.Random(8))
    merge_parts(parts, str(tmp_path / "m2.csv"), memory_budget=budget)
    remaining_from_done(manifest, str(tmp_path / "m2.csv"), str(tmp_path / "r2.csv"), memory_budget=budget)
    opened = []
    for name in ("iter_batches", "read_table", "file_columns"):
        real = getattr(reduce_parts, name)
        monkeypatch.setattr(reduce_parts, name,
                            lambda path, *a, real=real, **k: opened.append(str(path)) or real(path, *a, **k))
    spools = []
    real_close = reduce_parts._KeySpool.close
    monkeypatch.setattr(reduce_parts._KeySpool, "close",
                        lambda self: spools.append(self._writer is not None) or real_close(self))
    merged, rest = merge_and_remaining(parts, str(tmp_path / "m1.csv"), manifest, str(tmp_path / "r1.csv"),
                                       memory_budget=budget)
    assert (tmp_path / "m1.csv").read_bytes() == (tmp_path / "m2.csv").read_bytes()
    assert (tmp_path / "r1.csv").read_bytes() == (tmp_path / "r2.csv").read_bytes()
    assert str(tmp_path / "m1.csv") not in opened
    # B = 1: the merge hands its done keys to the spool (held); past the budget both steps share the buckets
    assert spools == ([False] if budget == reduce_parts.DEFAULT_BUDGET else [])
    assert merged.written == len(read_rows(tmp_path / "m2.csv")) - 1
    assert rest.written == len(read_rows(tmp_path / "r2.csv")) - 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_fused_with_an_integer_key_matches_the_two_steps(tmp_path):
    """A typed key (Parquet parts) written to CSV: the fused path reads it back as the two steps do."""
    pq.write_table(pa.table({"path": [3, 1, 3], "text": ["a", "b", "c"]}), tmp_path / "p.parquet")
    manifest = write_csv(tmp_path / "DATA.csv", ["path", "fps"], [[str(i), "30"] for i in range(5)])
    for out in ("m.csv", "m.parquet"):
        rest = str(tmp_path / f"r-{out}.csv")
        merge_and_remaining([str(tmp_path / "p.parquet")], str(tmp_path / out), manifest, rest)
        assert [r[0] for r in read_rows(tmp_path / f"r-{out}.csv")[1:]] == ["0", "2", "4"]


def test_cli_merge_with_remaining(tmp_path, capsys):
    manifest, parts = _random_inputs(tmp_path, random.Random(9), parts=3, keys=500)
    assert main(["merge", *parts, "-o", str(tmp_path / "m.csv"), "--remaining", manifest, str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert main(["remaining", manifest, "--done", str(tmp_path / "m.csv"), "-o", str(tmp_path / "r2.csv")]) == 0
    assert (tmp_path / "r.csv").read_bytes() == (tmp_path / "r2.csv").read_bytes()
    rows = len(read_rows(tmp_path / "r.csv")) - 1
    assert 0 < rows < 500 and f"r.csv: {rows} of 500 rows remaining" in out


@pytest.mark.parametrize("budget", [reduce_parts.DEFAULT_BUDGET, 20_000])
def test_hash_collisions_never_change_the_answer(tmp_path, monkeypatch, budget):
    """With a hash so weak that most keys collide, grouping and membership stay exact."""
    manifest, parts = _random_inputs(tmp_path, random.Random(6), parts=4, keys=300)
    merge_parts(parts, str(tmp_path / "good.csv"), memory_budget=budget)
    remaining_from_done(manifest, str(tmp_path / "good.csv"), str(tmp_path / "good-rest.csv"), memory_budget=budget)
    weak = lambda keys: np.array([len(k) % 3 for k in keys.to_pylist()], dtype=np.uint64)  # noqa: E731
    monkeypatch.setattr(keyhash, "key_hash", weak)
    exact = []
    _spy(monkeypatch, "_group_exact", exact)
    merge_parts(parts, str(tmp_path / "weak.csv"), memory_budget=budget)
    remaining_from_done(manifest, str(tmp_path / "weak.csv"), str(tmp_path / "weak-rest.csv"), memory_budget=budget)
    merge_and_remaining(parts, str(tmp_path / "fused.csv"), manifest, str(tmp_path / "fused-rest.csv"),
                        memory_budget=budget)
    assert exact  # the exact fallback ran
    assert (tmp_path / "weak.csv").read_bytes() == (tmp_path / "good.csv").read_bytes()
    assert (tmp_path / "weak-rest.csv").read_bytes() == (tmp_path / "good-rest.csv").read_bytes()
    assert (tmp_path / "fused.csv").read_bytes() == (tmp_path / "good.csv").read_bytes()
    assert (tmp_path / "fused-rest.csv").read_bytes() == (tmp_path / "good-rest.csv").read_bytes()


def test_key_set_is_exact_with_duplicates_and_collisions(monkeypatch):
    keys = pa.array(["a", "bb", "a", "cc", "dd", "é"])
    probe = pa.array(["a", "b", "cc", "ee", "é", "", "dd"])
    expected = [True, False, True, False, True, False, True]
    assert KeySet(keys).contains(probe).tolist() == expected
    monkeypatch.setattr(keyhash, "key_hash", lambda k: np.zeros(len(k), dtype=np.uint64))
    assert KeySet(keys).contains(probe).tolist() == expected
    assert hash_groups(keys) is None


def test_bucket_files_go_to_tmp_dir_and_are_removed(tmp_path, monkeypatch):
    manifest, parts = _random_inputs(tmp_path, random.Random(5), parts=3, keys=200)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []
    real = reduce_parts.Partitions

    def spy(folder, *args):
        seen.append(folder)
        return real(folder, *args)

    monkeypatch.setattr(reduce_parts, "Partitions", spy)
    merge_parts(parts, str(tmp_path / "out.csv"), memory_budget=TINY, tmp_dir=str(scratch))
    assert seen and all(os.path.dirname(f) == str(scratch) for f in seen)
    assert os.listdir(scratch) == []


def test_key_hash_depends_only_on_the_key_text():
    keys = pa.array(["", "a", "abcdefgh", "abcdefghi", "vidéo/東京.mp4", "x" * 1000, "abcdefgh"])
    h = key_hash(keys)
    assert h[2] == h[6] and len(set(h.tolist())) == 6
    assert (key_hash(keys.slice(2)) == h[2:]).all()
    assert (key_hash(pa.chunked_array([keys.slice(0, 3), keys.slice(3)])) == h).all()
    assert (key_hash(keys.cast(pa.large_string())) == h).all()
    assert (key_hash(pa.array([7, 42])) == key_hash(pa.array(["7", "42"]))).all()


def test_buckets_are_balanced():
    counts = np.bincount(bucket_of(pa.array([f"/data/clip_{i:08d}.mp4" for i in range(70_000)]), 7), minlength=7)
    assert counts.min() > 9_000 and counts.max() < 11_000


def test_csv_parts_read_as_text(tmp_path, budget):
    a = write_csv(tmp_path / "a.csv", ["path", "num_frames", "fps"], [["v1", "025", "29.970"]])
    merge_parts([a], str(tmp_path / "out.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "out.csv") == [["path", "num_frames", "fps"], ["v1", "025", "29.970"]]


def test_header_only_inputs_give_header_only_outputs(tmp_path, budget):
    empty_part = write_csv(tmp_path / "p.csv", ["path", "text"], [])
    merge_parts([empty_part], str(tmp_path / "out.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "out.csv") == [["path", "text"]]
    manifest = write_csv(tmp_path / "DATA.csv", ["path"], [["v1"], ["v2"]])
    remaining_from_done(manifest, empty_part, str(tmp_path / "rest.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "rest.csv") == [["path"], ["v1"], ["v2"]]
    empty_manifest = write_csv(tmp_path / "DATA0.csv", ["path"], [])
    remaining_from_done(empty_manifest, manifest, str(tmp_path / "rest0.csv"), memory_budget=budget)
    assert read_rows(tmp_path / "rest0.csv") == [["path"]]


def test_out_of_place_winners_land_where_their_key_first_appeared(tmp_path, monkeypatch):
    """Bucketed: a key whose winner comes later (another part, or later in its own part) is moved back
    to its first row's place, between rows that stayed in place; rows that lose are dropped."""
    a = write_csv(tmp_path / "a.csv", ["path", "text", "status"],
                  [["k0", "a0", "ok"], ["k1", "a1", "error"], ["k2", "a2", "ok"], ["k3", "a3", "error"],
                   ["k4", "a4", "ok"], ["k1", "a1 again", "error"]])
    b = write_csv(tmp_path / "b.csv", ["path", "text", "status"],
                  [["k5", "b5", "ok"], ["k3", "b3", "ok"], ["k1", "b1", "skipped"], ["k6", "b6", "error"],
                   ["k0", "b0", "error"], ["k2", "b2", "ok"]])
    moved = []
    real = reduce_parts._range_of
    monkeypatch.setattr(reduce_parts, "_range_of", lambda o, *a: moved.append(len(o)) or real(o, *a))
    counts = merge_parts([a, b], str(tmp_path / "out.csv"), memory_budget=TINY)
    assert read_rows(tmp_path / "out.csv") == [
        ["path", "text", "status"], ["k0", "a0", "ok"], ["k1", "b1", "skipped"], ["k2", "b2", "ok"],
        ["k3", "b3", "ok"], ["k4", "a4", "ok"], ["k5", "b5", "ok"], ["k6", "b6", "error"]]
    assert sum(moved) == 3  # k1, k2, k3 were moved; k0, k4, k5, k6 stayed where they were read
    assert (counts.rows, counts.written, counts.ok, counts.skipped, counts.error) == (12, 7, 5, 1, 1)


@pytest.mark.parametrize("budget", [200, 2_000, TINY])
def test_fused_bucketed_remaining_with_keys_done_in_any_part(tmp_path, budget):
    """Fused, bucketed: a key done in any part (even after an error elsewhere) is not remaining; one whose
    winner is an error or skipped is; manifest order and every manifest column are kept."""
    manifest = write_csv(tmp_path / "DATA.csv", ["path", "fps"], [[f"k{i}", str(i)] for i in range(8)])
    a = write_csv(tmp_path / "a.csv", ["path", "text", "status"],
                  [["k3", "x", "error"], ["k1", "x", "ok"], ["k6", "x", "skipped"], ["k9", "x", "ok"]])
    b = write_csv(tmp_path / "b.csv", ["path", "text"], [["k3", "y"], ["k5", "y"]])
    merged, rest = merge_and_remaining([a, b], str(tmp_path / "m.csv"), manifest, str(tmp_path / "r.csv"),
                                       memory_budget=budget)
    assert read_rows(tmp_path / "r.csv") == [["path", "fps"], ["k0", "0"], ["k2", "2"], ["k4", "4"], ["k6", "6"],
                                             ["k7", "7"]]
    assert (rest.rows, rest.written, rest.ok, rest.pending) == (8, 5, 3, 5)
    assert [r[0] for r in read_rows(tmp_path / "m.csv")[1:]] == ["k3", "k1", "k6", "k9", "k5"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_fused_bucketed_with_header_only_inputs(tmp_path):
    part = write_csv(tmp_path / "p.csv", ["path", "text"], [])
    manifest = write_csv(tmp_path / "DATA.csv", ["path"], [["v1"], ["v2"]])
    merge_and_remaining([part], str(tmp_path / "m.csv"), manifest, str(tmp_path / "r.csv"), memory_budget=TINY)
    assert read_rows(tmp_path / "m.csv") == [["path", "text"]]
    assert read_rows(tmp_path / "r.csv") == [["path"], ["v1"], ["v2"]]


def test_ordered_spill_gives_any_intervals_across_batch_boundaries(tmp_path):
    """The spill is read back by ordinal intervals that start and end inside batches, span several, or are
    empty, in any order (ranges are written out from several threads)."""
    schema = pa.schema([("n", pa.int64())])
    spill = reduce_parts._OrderedSpill(str(tmp_path / "s.arrow"), schema)
    for lo, hi in ((0, 3), (3, 4), (4, 4), (4, 11), (11, 12)):
        spill.write(pa.table({"n": list(range(lo, hi))}, schema=schema))
    spill.close()
    # an empty table writes no batch
    assert [(s, b.num_rows) for s, b in spill.batches()] == [(0, 3), (3, 1), (4, 7), (11, 1)]
    intervals = [(10, 12), (0, 2), (2, 2), (2, 5), (5, 10), (0, 12), (3, 4), (12, 12), (4, 11)]
    with spill.reader() as reader:
        got = [spill.interval(reader, lo, hi)["n"].to_pylist() for lo, hi in intervals]
    assert got == [list(range(lo, hi)) for lo, hi in intervals]
    spill.remove()
    assert os.listdir(tmp_path) == []


def test_merge_buckets_are_capped_in_size_once_past_the_budget(tmp_path, monkeypatch):
    """Inputs that fit the budget stay in memory; past it, buckets hold at most BUCKET_BYTES each even
    when the budget is larger, and the files out are the same."""
    manifest, parts = _random_inputs(tmp_path, random.Random(11))
    nbytes = sum(os.path.getsize(p) for p in parts)
    assert reduce_parts._merge_buckets(parts, nbytes) == 1
    monkeypatch.setattr(reduce_parts, "BUCKET_BYTES", -(-nbytes // 10))
    assert reduce_parts._merge_buckets(parts, nbytes // 2) == 10
    assert reduce_parts._merge_buckets(parts, -(-nbytes // 20)) == 20
    merge_and_remaining(parts, str(tmp_path / "m1.csv"), manifest, str(tmp_path / "r1.csv"), memory_budget=nbytes // 2)
    monkeypatch.setattr(reduce_parts, "BUCKET_BYTES", 1 << 30)
    merge_and_remaining(parts, str(tmp_path / "m2.csv"), manifest, str(tmp_path / "r2.csv"), memory_budget=nbytes // 2)
    assert (tmp_path / "m1.csv").read_bytes() == (tmp_path / "m2.csv").read_bytes()
    assert (tmp_path / "r1.csv").read_bytes() == (tmp_path / "r2.csv").read_bytes()


def _max_concurrent(monkeypatch, owner, name, pause=0.01):
    """Wrap owner.name so that each call lasts `pause` longer; returns [most calls seen running at once]."""
    import threading
    import time

    busy, most, lock = [0], [0], threading.Lock()
    real = getattr(owner, name)

    def slow(*args, **kwargs):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(pause)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(owner, name, slow)
    return most


@pytest.mark.parametrize("threads", [2, 3])
def test_buckets_decided_in_threads_give_the_same_files(tmp_path, monkeypatch, threads):
    """Buckets decided several at a time (and the manifest read beside the parts) write the bytes that one
    thread writes; every bucket is decided once, and more than one at a time."""
    manifest, parts = _random_inputs(tmp_path, random.Random(12))
    monkeypatch.setattr(reduce_parts, "_threads", lambda budget: 1)
    merge_and_remaining(parts, str(tmp_path / "m1.csv"), manifest, str(tmp_path / "r1.csv"), memory_budget=20_000)
    monkeypatch.setattr(reduce_parts, "_threads", lambda budget: threads)
    most = _max_concurrent(monkeypatch, reduce_parts, "_resolve")  # long enough for a second bucket to start
    merged, rest = merge_and_remaining(parts, str(tmp_path / "m2.csv"), manifest, str(tmp_path / "r2.csv"),
                                       memory_budget=20_000)
    assert (tmp_path / "m1.csv").read_bytes() == (tmp_path / "m2.csv").read_bytes()
    assert (tmp_path / "r1.csv").read_bytes() == (tmp_path / "r2.csv").read_bytes()
    assert most[0] == threads
    assert merged.written == len(read_rows(tmp_path / "m1.csv")) - 1 and rest.written == len(read_rows(tmp_path / "r1.csv")) - 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


@pytest.mark.parametrize("broken", ["manifest", "part"])
def test_a_bad_row_on_either_side_of_the_fused_read_is_one_error_and_leaves_no_files(tmp_path, broken):
    """The manifest is read in a thread beside the parts: an empty key on either side is the same one-line
    error naming the file and row, the other side stops, and no file (out or scratch) is left."""
    manifest, parts = _random_inputs(tmp_path, random.Random(13))
    bad = manifest if broken == "manifest" else parts[5]
    rows = read_rows(bad)
    rows[40][0] = ""
    write_csv(bad, rows[0], rows[1:])
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UserError) as err:
        merge_and_remaining(parts, str(tmp_path / "m.csv"), manifest, str(tmp_path / "r.csv"), memory_budget=20_000)
    assert bad in str(err.value) and "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_ranges_moved_and_written_in_threads_give_the_same_files(tmp_path, monkeypatch, suffix):
    """The output side of a bucketed merge runs in threads too: the spill is cut into runs whose moved rows
    go to range files of their own (split a few rows at a time here, and mapped a batch at a time), and
    ranges are put in order and encoded several at a time (CSV text, Parquet tables), then written in order.
    The files are those that one thread writes, and the remaining file is written beside the merge."""
    from vidcap.manifest.io import TableWriter

    manifest, parts = _random_inputs(tmp_path, random.Random(14))
    monkeypatch.setattr(reduce_parts, "_threads", lambda budget: 1)
    merge_and_remaining(parts, str(tmp_path / f"m1{suffix}"), manifest, str(tmp_path / "r1.csv"), memory_budget=20_000)
    monkeypatch.setattr(reduce_parts, "_threads", lambda budget: 2)
    monkeypatch.setattr(reduce_parts, "MOVE_ROWS", 7)
    monkeypatch.setattr(reduce_parts, "MAPPED_BATCHES", 1)
    moved_runs, real_move_out = [], reduce_parts._move_out

    def move_out(*args):  # the Partitions of each run of the spill
        result = real_move_out(*args)
        moved_runs.append(len(result))
        return result

    monkeypatch.setattr(reduce_parts, "_move_out", move_out)
    encoding = _max_concurrent(monkeypatch, TableWriter, "encode")
    merged, rest = merge_and_remaining(parts, str(tmp_path / f"m2{suffix}"), manifest, str(tmp_path / "r2.csv"),
                                       memory_budget=20_000)
    if suffix == ".parquet":
        assert pq.read_table(tmp_path / "m1.parquet").equals(pq.read_table(tmp_path / "m2.parquet"))
        assert merged.written == pq.read_metadata(tmp_path / "m1.parquet").num_rows
    else:
        assert (tmp_path / f"m1{suffix}").read_bytes() == (tmp_path / f"m2{suffix}").read_bytes()
    assert (tmp_path / "r1.csv").read_bytes() == (tmp_path / "r2.csv").read_bytes()
    assert moved_runs == [2] and encoding[0] == 2
    assert rest.written == len(read_rows(tmp_path / "r1.csv")) - 1
    if suffix == ".csv":
        assert merged.written == len(read_rows(tmp_path / "m1.csv")) - 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_a_failure_while_ranges_are_written_in_threads_leaves_no_files(tmp_path, monkeypatch):
    """An error in a range's thread (here: the disk, as the third range is formatted) is raised as it is,
    once the remaining file's thread has stopped too; neither output nor any scratch file is left."""
    from vidcap.manifest.io import TableWriter

    manifest, parts = _random_inputs(tmp_path, random.Random(15))
    monkeypatch.setattr(reduce_parts, "_threads", lambda budget: 2)
    calls, real = [], TableWriter.encode

    def failing(self, data):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(TableWriter, "encode", failing)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        merge_and_remaining(parts, str(tmp_path / "m.csv"), manifest, str(tmp_path / "r.csv"), memory_budget=20_000)
    assert sorted(os.listdir(tmp_path)) == before
