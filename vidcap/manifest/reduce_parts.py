"""Reducers for users who already have part files (the Open-Sora forms): merge parts, remaining rows.

`merge_parts` keeps each key once (the `resolve` rule: ok > skipped > error, then the later row) in order
of first appearance; `remaining_from_done` keeps the manifest rows whose key is not done;
`merge_and_remaining` does both in one go, the merge handing its done keys to the remaining step.

Why this design: the inputs are plain files of any size, with no run folder whose shards already
partition the keys, and both answers are global (a key's rows may sit in any part). Memory must not
grow with rows, so:
  1. What must be held at once (merge: every part row; remaining: DONE's keys) is compared with
     `memory_budget`. If it fits, the work is one in-memory pass with no disk round-trip (B = 1).
  2. Otherwise only what deciding needs (each row's key, status, global ordinal and hash) goes to
     bucket `hash(key) % B` (an Arrow IPC file), B chosen from the input size so a bucket fits the
     budget; the rows themselves are appended once, as read, to one ordered spill file. Equal keys
     share a bucket, so each bucket is resolved alone, in memory.
  3. Merge: most winners are their key's first row, already where the output wants them ("in
     place"); only the others are copied out of the spill, into B range files by the ordinal of their
     key's first row. The output is the spill read in order, range by range, with each range's moved
     rows put in among its in-place winners by a linear scatter: the global order without ever
     holding all rows. Remaining alone: only keys are bucketed; the buckets mark the done manifest
     rows in a mask (one byte per manifest row), and a second pass over the manifest writes the
     others. Fused with a bucketed merge, the manifest's keys go to buckets of their own (same hash,
     same B), each merge bucket marks the manifest rows its done winners cover, and the manifest's
     rows come back from an ordered spill instead of a second CSV parse.
Keys are grouped and looked up through 64-bit hashes sorted with numpy and confirmed by string
comparison (`keyhash`): Arrow's own hash tables were slower here and needed several times the key
bytes. Everything columnar is pyarrow C++ or numpy, no Python loop per row; rows are gathered in
slices, so a gathered copy never exceeds one slice. Temporary files go next to the output (or in `tmp_dir`)
and are always removed; the output is written under a temporary name (flushed to disk as it grows) and
renamed into place. Where steps are independent they run on all cores (`_merge_bucketed`).
"""

from __future__ import annotations

import bisect
import itertools
import os
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidcap.durable import atomic_path, flushed_as_written
from vidcap.errors import UserError
from vidcap.manifest.buckets import Partitions, bucket_count, bucket_of_hash, id_type
from vidcap.manifest.io import (
    DEFAULT_KEY,
    TableWriter,
    check_key_column,
    file_columns,
    iter_batches,
    manifest_format,
    read_table,
)
from vidcap.manifest import keyhash
from vidcap.manifest.keyhash import KeySet, hash_groups, key_text
from vidcap.manifest.reduce_run import ReduceCounts
from vidcap.manifest.resolve import status_rank

DEFAULT_BUDGET = 256 << 20  # bytes of input data held at once (peak RSS is a small multiple)
BUCKET_BYTES = 64 << 20  # once past the budget, input bytes per merge bucket (and per range), whatever the budget
MAX_BUDGET = 1 << 30  # a held column is combined into one string array, whose offsets stop at 2 GiB
ORD = "__vidcap_ord"  # a row's number across all inputs, in the order read
FIRST = "__vidcap_first"  # ordinal of a key's first appearance: merge's output order
HASH = "__vidcap_hash"  # a spilled row's key_hash, so that each key is hashed once, not once per pass
SLICE_ROWS = 1 << 16  # rows gathered (and written) at a time
MAPPED_BATCHES = 32  # spill batches (CSV blocks: about 1 MB each) mapped at a time
MOVE_ROWS = 1 << 17  # moved rows split into range files at a time: a spill batch holds only a few per range
SPILL_SHARE = 4  # a file is read whole for spilling only below budget / 4: spilling copies it twice
KEYSET_BYTES_PER_KEY = 32  # a KeySet's index: hash, order, slot, and lookup temporaries
_POSITION_BITS = 40  # score = rank << 40 | position: the max score is the winning row
_COMPRESSED_CSV_RATIO = 5  # a compressed CSV holds about this many times its size in Arrow data

PathLike = str | os.PathLike[str]
T = TypeVar("T")
Keys = tuple[pa.Array, "np.ndarray | None"]  # done keys as text, and their key_hash when already known


def merge_parts(
    parts: Sequence[PathLike],
    output: PathLike,
    key: str = DEFAULT_KEY,
    memory_budget: int = DEFAULT_BUDGET,
    tmp_dir: PathLike | None = None,
) -> ReduceCounts:
    """Every key of the parts once, with the row that counts for it, in order of first appearance.

    Columns are the union over parts (a part missing one gets nulls); CSV parts are text, Parquet
    parts keep their types (a column typed differently in two parts becomes text).
    """
    manifest_format(output)
    if not parts:
        raise UserError("merge: no part files given")
    return _merge(parts, _union_schema(parts, key), output, key, min(memory_budget, MAX_BUDGET), tmp_dir)


def merge_and_remaining(
    parts: Sequence[PathLike],
    merged: PathLike,
    manifest: PathLike,
    remaining: PathLike,
    key: str = DEFAULT_KEY,
    memory_budget: int = DEFAULT_BUDGET,
    tmp_dir: PathLike | None = None,
) -> tuple[ReduceCounts, ReduceCounts]:
    """`merge_parts(parts, merged)` then `remaining_from_done(manifest, merged, remaining)`, same files.

    Why fused: the remaining step needs only the merged file's done keys, and reading back a merged
    file (captions and all: most of the bytes) to get them cost as much as the merge itself. In memory
    (B = 1) the merge hands each winning slice's done keys to a `_KeySpool` (held up to the budget,
    then one Arrow file of keys in the scratch folder), which feeds the held/bucketed remaining.
    Bucketed, the manifest's keys share the merge's buckets and each bucket's done winners mark
    the manifest rows they cover (`_ManifestSide`): no key is written or hashed twice.
    """
    manifest_format(merged)
    manifest_format(remaining)
    if not parts:
        raise UserError("merge: no part files given")
    memory_budget = min(memory_budget, MAX_BUDGET)
    schema = _union_schema(parts, key)
    manifest_schema = _file_schema(manifest)
    check_key_column(manifest, manifest_schema.names, key)
    key_type = schema.field(key).type
    if manifest_format(merged) == "csv" and not (pa.types.is_string(key_type) or pa.types.is_large_string(key_type)):
        # a typed key's text read back from CSV may differ from its cast (floats, times): do what the two steps do
        merge_counts = _merge(parts, schema, merged, key, memory_budget, tmp_dir)
        return merge_counts, remaining_from_done(manifest, merged, remaining, key, memory_budget, tmp_dir)
    buckets = _merge_buckets(parts, memory_budget)
    if buckets > 1:
        merge_counts, rest = ReduceCounts(), ReduceCounts()
        with _atomic(merged) as merged_tmp, TableWriter(merged_tmp, schema, like=merged) as merged_writer, \
                _atomic(remaining) as rest_tmp, TableWriter(rest_tmp, manifest_schema, like=remaining) as rest_writer, \
                _scratch(remaining, tmp_dir) as folder:
            _merge_bucketed(parts, schema, key, buckets, memory_budget, folder, merged_writer, merge_counts,
                            (manifest, manifest_schema, rest_writer, rest))
        rest.ok = rest.rows - rest.written
        rest.pending = rest.written
        return merge_counts, rest
    with _scratch(remaining, tmp_dir) as folder:
        spool = _KeySpool(folder, key, "status" in schema.names, memory_budget)
        try:
            merge_counts = _merge(parts, schema, merged, key, memory_budget, tmp_dir, spool.add)
        finally:
            spool.close()
        rest = _remaining(manifest, manifest_schema, spool.keys(), spool.nbytes, remaining, key, memory_budget, tmp_dir)
    return merge_counts, rest


def _merge(
    parts: Sequence[PathLike],
    schema: pa.Schema,
    output: PathLike,
    key: str,
    memory_budget: int,
    tmp_dir: PathLike | None,
    sink: Callable[[pa.Table, np.ndarray | None], None] | None = None,
) -> ReduceCounts:
    """merge_parts' work; `sink` (if any) sees every winning row once, a slice at a time."""
    buckets = _merge_buckets(parts, memory_budget)
    counts = ReduceCounts()
    with _atomic(output) as tmp, TableWriter(tmp, schema, like=output) as writer:
        if buckets == 1:
            table = pa.concat_tables(t for p in parts for t in _chunks(p, schema, key, memory_budget, counts))
            table = table.combine_chunks()
            winners, _ = _resolve(table, key)
            for piece in _gather(table, winners):
                _tally(counts, piece)
                if sink is not None:
                    sink(piece, None)
                writer.write(piece)
        else:
            with _scratch(output, tmp_dir) as folder:
                _merge_bucketed(parts, schema, key, buckets, memory_budget, folder, writer, counts)
    return counts


def _merge_buckets(parts: Sequence[PathLike], budget: int) -> int:
    """1 if the parts fit the budget (all in memory); else enough buckets of at most BUCKET_BYTES each.

    Why not buckets as big as the budget: the per-bucket work (hash sorts, string gathers, the range
    scatter) runs out of CPU cache as buckets grow. At 30M rows (4.4 GB of parts), 256 MB buckets took
    113 s of CPU and 1.4 GB peak, 64 MB buckets 85 s and 0.85 GB (same files out)."""
    nbytes = sum(_arrow_bytes(p) for p in parts)
    return 1 if bucket_count(nbytes, budget) == 1 else bucket_count(nbytes, min(budget, BUCKET_BYTES))


def remaining_from_done(
    manifest: PathLike,
    done: PathLike | Sequence[PathLike],
    output: PathLike,
    key: str = DEFAULT_KEY,
    memory_budget: int = DEFAULT_BUDGET,
    tmp_dir: PathLike | None = None,
) -> ReduceCounts:
    """Manifest rows (every column, manifest order) whose key has no done row in DONE.

    A DONE file with a `status` column counts only its `ok` rows; one without (an Open-Sora part, a
    caption file) counts every row. Keys compare by their text, so an integer key matches "7".
    Only DONE's keys are held: while they fit the budget, the manifest streams past them (read
    whole if it fits what is left); past it, both go to buckets.
    """
    manifest_format(output)
    dones = [done] if isinstance(done, (str, os.PathLike)) else list(done)
    if not dones:
        raise UserError("remaining: no DONE file given")
    memory_budget = min(memory_budget, MAX_BUDGET)
    schema = _file_schema(manifest)
    check_key_column(manifest, schema.names, key)
    done_columns = {}
    for path in dones:
        names = file_columns(path)
        check_key_column(path, names, key)
        done_columns[path] = [key] + (["status"] if "status" in names else [])
    nbytes = sum(_arrow_bytes(p, c) for p, c in done_columns.items())
    return _remaining(manifest, schema, _done_keys(done_columns, key), nbytes, output, key, memory_budget, tmp_dir)


def _remaining(
    manifest: PathLike,
    schema: pa.Schema,
    done_keys: Iterator[Keys],
    done_bytes: int,
    output: PathLike,
    key: str,
    memory_budget: int,
    tmp_dir: PathLike | None,
) -> ReduceCounts:
    """remaining_from_done's work, from the done keys as text arrays (`done_bytes`: about their size)."""
    counts = ReduceCounts()
    held, held_bytes = _hold(done_keys, memory_budget)
    pa.default_memory_pool().release_unused()  # the CSV reader's buffers, before the next big step
    with _atomic(output) as tmp, TableWriter(tmp, schema, like=output) as writer:
        if held_bytes <= memory_budget:
            hashes = [h for _, h in held]
            done_set = KeySet(
                pa.chunked_array([k for k, _ in held], type=pa.string()).combine_chunks(),
                None if any(h is None for h in hashes) else np.concatenate(hashes or [np.zeros(0, np.uint64)]),
            )
            del hashes
            del held
            for table in _chunks(manifest, schema, key, memory_budget - held_bytes, counts):
                rows = table.filter(~done_set.contains(key_text(table[key])))
                writer.write(rows)
                counts.written += rows.num_rows
        else:
            nbytes = _arrow_bytes(manifest) + done_bytes
            with _scratch(output, tmp_dir) as folder:
                _remaining_bucketed(
                    manifest, schema, itertools.chain(_drain(held), done_keys), key,
                    bucket_count(nbytes, memory_budget), memory_budget, folder, writer, counts,
                )
    counts.ok = counts.rows - counts.written
    counts.pending = counts.written
    return counts


def _merge_bucketed(
    parts: Sequence[PathLike],
    schema: pa.Schema,
    key: str,
    buckets: int,
    budget: int,
    folder: str,
    writer: TableWriter,
    counts: ReduceCounts,
    manifest: tuple[PathLike, pa.Schema, TableWriter, ReduceCounts] | None = None,
) -> None:
    """The merge past the budget; with `manifest` (path, schema, writer, counts), the remaining step too.

    Only what deciding needs goes to the B buckets: each row's key, status, ordinal and hash. The rows
    themselves are appended once, as read, to one ordered spill file. Each bucket then gives its keys'
    winners: a winner that is its key's first row ("in place", most of them) is already where the
    output wants it; the others are copied out of the spill into range files by the ordinal of their
    key's first row. The output is the spill read in order, range by range, with each range's
    in-place winners and moved-in rows put in order by a linear scatter. With a manifest, its keys go
    to buckets of their own (same B), its rows to a second ordered spill; each bucket's done winners
    mark the manifest rows they cover, and the spill, filtered, is the remaining file.

    Two cores at work where the steps are independent: the manifest is read in a thread beside the
    parts; buckets are decided a few at a time in threads (`_threads`), results applied in bucket order;
    the moved rows are copied out by runs of the spill in threads; ranges are put in order and formatted
    a few at a time in threads, written in range order; the remaining file is written in a thread of its
    own beside them. The files out are the same bytes as one thread's.
    """
    status = ["status"] if "status" in schema.names else []
    key_schema = pa.schema([(key, pa.string())] + [schema.field(s) for s in status]
                           + [(ORD, pa.int64()), _HASH_FIELD])
    spill = _OrderedSpill(os.path.join(folder, "rows.arrow"), schema)
    keys = Partitions(folder, "keys", buckets, key_schema)
    stop = threading.Event()
    side = ThreadPoolExecutor(1, thread_name_prefix="vidcap-manifest") if manifest is not None else None
    rest_ready = side.submit(_ManifestSide, folder, buckets, key, budget, *manifest, stop) if side else None
    try:
        try:
            for path in parts:
                for table in _chunks(path, schema, key, budget // SPILL_SHARE, counts):
                    if rest_ready is not None and rest_ready.done():
                        rest_ready.result()  # a bad manifest row: say so now, not after every part is read
                    text = key_text(table[key])
                    hashes = keyhash.key_hash(text)
                    small = [text] + [table[s] for s in status]
                    small += [_ordinals(counts.rows - table.num_rows, table.num_rows), pa.array(hashes)]
                    keys.append(pa.Table.from_arrays(small, schema=key_schema), bucket_of_hash(hashes, buckets))
                    spill.write(table)
                    del table, text, small
        finally:
            keys.close()
            spill.close()
        rest = rest_ready.result() if rest_ready is not None else None
    finally:
        stop.set()  # a failed parts side stops the manifest side at its next chunk; then its files can go
        if side is not None:
            side.shutdown(wait=True)
    total = counts.rows
    in_place = np.zeros(total, dtype=np.bool_)
    moved_from, moved_to = [], []  # ordinals of the out-of-place winners, and of their keys' first rows

    def winners_of(b: int) -> _BucketWinners:
        table = keys.read(b)
        winners, first = _resolve(table, key)
        winner_ords = table[ORD].to_numpy()[winners]
        here = winner_ords == first
        chosen = table.select([key] + status).take(pa.array(winners))
        done_rows = rest.done_rows(b, chosen, table[HASH].to_numpy()[winners]) if rest is not None else None
        del table
        keys.remove(b)
        return _BucketWinners(winner_ords[here], winner_ords[~here], first[~here], chosen, done_rows)

    for found in _in_threads(winners_of, range(buckets), _threads(budget)):
        in_place[found.in_place] = True
        moved_from.append(found.moved_from)
        moved_to.append(found.moved_to)
        _tally(counts, found.chosen)
        if rest is not None:
            rest.keep[found.done_rows] = False
    order = np.argsort(np.concatenate(moved_from))
    moved_from, moved_to = np.concatenate(moved_from)[order], np.concatenate(moved_to)[order]
    del order
    rest_side = ThreadPoolExecutor(1, thread_name_prefix="vidcap-remaining") if rest is not None else None
    writing_rest = rest_side.submit(rest.write) if rest_side is not None else None  # its own file, beside the merge
    try:
        threads = _threads(budget)
        range_schema = schema.append(pa.field(FIRST, pa.int64()))
        moved = _move_out(spill, moved_from, moved_to, total, folder, buckets, range_schema, threads)
        del moved_from, moved_to
        bounds = [-(-r * total // buckets) for r in range(buckets + 1)]  # range r: ordinals o, o * B // total == r

        def range_out(r: int) -> list[pa.Buffer | pa.Table]:
            """Range r of the output, encoded: its in-place winners (read from the spill) and the rows moved
            into it, put in order by a scatter of their first appearances."""
            lo, hi = bounds[r], bounds[r + 1]
            moved_in = pa.concat_tables([m.read(r) for m in moved])
            for m in moved:
                m.remove(r)
            with spill.reader(mapped=True) as reader:  # a range is about BUCKET_BYTES: mapped whole
                rows = spill.interval(reader, lo, hi)
                whole = pa.concat_tables([rows, moved_in.drop_columns([FIRST])]).combine_chunks()
            here = np.flatnonzero(in_place[lo:hi])
            positions = np.concatenate([here, hi - lo + np.arange(moved_in.num_rows)])
            targets = np.concatenate([here, moved_in[FIRST].to_numpy() - lo])
            del rows, moved_in
            return [writer.encode(piece) for piece in _gather(whole, positions[_order_of_distinct(targets, hi - lo)])]

        for encoded in _in_threads(range_out, range(buckets), threads):
            for piece in encoded:
                writer.write_encoded(piece)
        spill.remove()
    finally:
        if rest_side is not None:
            rest_side.shutdown(wait=True)
    if writing_rest is not None:
        writing_rest.result()


def _move_out(
    spill: _OrderedSpill,
    moved_from: np.ndarray,
    moved_to: np.ndarray,
    total: int,
    folder: str,
    buckets: int,
    schema: pa.Schema,
    threads: int,
) -> list[Partitions]:
    """Copy the winners that are not their key's first row (ordinals `moved_from`, sorted) out of the spill,
    with their key's first ordinal (`moved_to`) as column FIRST, into range files by that ordinal.

    The spill's batches are cut into `threads` runs, read and copied at once, each into range files of its
    own: the order of rows within a range does not matter (each range is sorted by FIRST, which is distinct)."""

    def move(run: np.ndarray, t: int) -> Partitions:
        ranges = Partitions(folder, f"range{t}", buckets, schema)
        taken: list[pa.RecordBatch] = []  # rows taken from a few batches, then split into ranges at once
        taken_from, taken_rows = -1, 0  # index in moved_from of the first taken row, and how many
        try:
            for window in range(0, len(run), MAPPED_BATCHES):
                with spill.reader(mapped=True) as reader:
                    for i in run[window : window + MAPPED_BATCHES]:
                        start, end = spill.starts[i], spill.starts[i + 1]
                        lo, hi = np.searchsorted(moved_from, [start, end])
                        if hi > lo:  # a copy: nothing taken refers to the mapped file
                            taken.append(reader.get_batch(int(i)).take(pa.array(moved_from[lo:hi] - start)))
                            taken_from = lo if taken_from < 0 else taken_from
                            taken_rows += hi - lo
                        if taken and (taken_rows >= MOVE_ROWS or i == run[-1]):
                            to = moved_to[taken_from : taken_from + taken_rows]
                            rows = pa.Table.from_batches(taken).append_column(FIRST, pa.array(to))
                            ranges.append(rows, _range_of(to, total, buckets))
                            taken, taken_from, taken_rows = [], -1, 0
        finally:
            ranges.close()
        return ranges

    runs = np.array_split(np.arange(len(spill.starts) - 1), threads)
    return list(_in_threads(lambda t: move(runs[t], t), range(threads), threads))


class _BucketWinners(NamedTuple):
    """What one merge bucket decided, for the caller to apply (buckets are decided in threads)."""

    in_place: np.ndarray  # ordinals of winners that are their key's first row
    moved_from: np.ndarray  # ordinals of the other winners
    moved_to: np.ndarray  # and of their keys' first rows
    chosen: pa.Table  # the winners' key and status, in order of first appearance
    done_rows: np.ndarray | None  # manifest ordinals these winners mark done (fused remaining only)


def _threads(budget: int) -> int:
    """Buckets decided at once: one per core this process may use, as many as the budget holds buckets.
    The work is numpy and pyarrow kernels, which release the GIL."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, budget // BUCKET_BYTES))


def _in_threads(work: Callable[[int], T], items: Iterable[int], threads: int) -> Iterator[T]:
    """work(item) for each item, `threads` at a time, results yielded in item order; at most `threads`
    results wait to be taken, so memory stays at `threads` items (buckets, ranges)."""
    if threads <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="vidcap-reduce") as pool:
        pending: deque[Future[T]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class _OrderedSpill:
    """Rows appended in read order to one Arrow file, read back in order (whole batches with their first
    ordinal) or by ordinal interval, from any thread (a reader each). Mapped only a few batches at a time:
    mapped pages once touched count in RSS until the map is closed."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self._writer = pa.ipc.new_file(path, schema)
        self.starts = [0]  # ordinal of each batch's first row, then the row count

    def write(self, table: pa.Table) -> None:
        for batch in table.to_batches():
            self._writer.write_batch(batch)
            self.starts.append(self.starts[-1] + batch.num_rows)

    def close(self) -> None:
        self._writer.close()

    @contextmanager
    def reader(self, mapped: bool = False) -> Iterator[pa.ipc.RecordBatchFileReader]:
        """A reader of its own (one per thread). `mapped`: batches point into the file's pages instead of
        being copied out of them (the output side reads the whole spill twice), valid only inside the
        block; map a few batches at a time, since the pages touched count as the process's memory until
        the map is closed."""
        with (pa.memory_map(self.path) if mapped else pa.OSFile(self.path)) as source:
            yield pa.ipc.open_file(source)

    def batches(self) -> Iterator[tuple[int, pa.RecordBatch]]:
        with self.reader() as reader:
            for i in range(reader.num_record_batches):
                yield self.starts[i], reader.get_batch(i)

    def interval(self, reader: pa.ipc.RecordBatchFileReader, lo: int, hi: int) -> pa.Table:
        """Rows [lo, hi), read by `reader`: the batches that hold them, sliced."""
        first = bisect.bisect_right(self.starts, lo) - 1
        last = bisect.bisect_left(self.starts, hi)
        batches = [reader.get_batch(i) for i in range(first, last)]
        return pa.Table.from_batches(batches, schema=self.schema).slice(lo - self.starts[first], hi - lo)

    def remove(self) -> None:
        os.unlink(self.path)
        pa.default_memory_pool().release_unused()


class _ManifestSide:
    """The remaining step inside a bucketed merge: the manifest's keys in buckets like the parts' (same
    hash, same B), its rows in an ordered spill (read twice: cheaper than parsing the CSV twice), and
    one byte per manifest row saying whether it is still to do."""

    def __init__(self, folder: str, buckets: int, key: str, budget: int, path: PathLike, schema: pa.Schema,
                 writer: TableWriter, counts: ReduceCounts, stop: threading.Event | None = None) -> None:
        """Reads the manifest into its buckets and spill (in a thread beside the parts' reading: `stop`,
        once set, ends it at the next chunk)."""
        self.key, self.writer, self.counts = key, writer, counts
        key_schema = pa.schema([(key, pa.string()), (ORD, pa.int64()), _HASH_FIELD])
        self.keys = Partitions(folder, "manifest", buckets, key_schema)
        self.spill = _OrderedSpill(os.path.join(folder, "manifest.arrow"), schema)
        try:
            for table in _chunks(path, schema, key, budget // SPILL_SHARE, counts):
                if stop is not None and stop.is_set():
                    return
                text = key_text(table[key])
                hashes = keyhash.key_hash(text)
                ordinals = _ordinals(counts.rows - table.num_rows, table.num_rows)
                self.keys.append(pa.Table.from_arrays([text, ordinals, pa.array(hashes)], schema=key_schema),
                                 bucket_of_hash(hashes, buckets))
                self.spill.write(table)
                del table, text
        finally:
            self.keys.close()
            self.spill.close()
        self.keep = np.ones(counts.rows, dtype=np.bool_)

    def done_rows(self, b: int, winners: pa.Table, hashes: np.ndarray) -> np.ndarray:
        """Ordinals of the manifest rows that bucket b's done merge winners (key, status) cover: not to do.
        Buckets may be looked at from several threads at once; `keep` is for the caller to mark."""
        if "status" in winners.column_names:
            ok = pc.fill_null(pc.equal(winners["status"], "ok"), False)
            winners = winners.filter(ok)
            hashes = hashes[ok.to_numpy(zero_copy_only=False)]
        table = self.keys.read(b)
        found = KeySet(key_text(winners[self.key]), hashes).contains(key_text(table[self.key]), table[HASH].to_numpy())
        self.keys.remove(b)
        return table[ORD].to_numpy()[found]

    def write(self) -> None:
        for start, batch in self.spill.batches():
            kept = batch.filter(pa.array(self.keep[start : start + batch.num_rows]))
            self.writer.write(kept)
            self.counts.written += kept.num_rows
        self.spill.remove()


def _remaining_bucketed(
    manifest: PathLike,
    schema: pa.Schema,
    done_keys: Iterable[Keys],
    key: str,
    buckets: int,
    budget: int,
    folder: str,
    writer: TableWriter,
    counts: ReduceCounts,
) -> None:
    """Only keys go to buckets: the manifest's (with their ordinals) and DONE's. Each bucket marks its
    done manifest rows in a mask of one byte per manifest row; the manifest is then streamed a second
    time and filtered by the mask. Parsing the manifest twice costs less than carrying every manifest
    row through bucket and range files (two disk round trips, a gather and a sort)."""
    rows = Partitions(folder, "rows", buckets, pa.schema([(key, pa.string()), (ORD, pa.int64()), _HASH_FIELD]))
    done = Partitions(folder, "done", buckets, pa.schema([(key, pa.string()), _HASH_FIELD]))
    try:
        for keys, hashes in done_keys:
            if hashes is None:
                hashes = keyhash.key_hash(keys)
            done.append(pa.table([keys, pa.array(hashes)], names=[key, HASH]), bucket_of_hash(hashes, buckets))
        for table in _chunks(manifest, schema, key, budget // SPILL_SHARE, counts):
            keys = key_text(table[key])
            hashes = keyhash.key_hash(keys)
            ordinals = _ordinals(counts.rows - table.num_rows, table.num_rows)
            rows.append(pa.table([keys, ordinals, pa.array(hashes)], names=[key, ORD, HASH]),
                        bucket_of_hash(hashes, buckets))
            del table, keys
    finally:
        rows.close()
        done.close()
    keep = np.ones(counts.rows, dtype=np.bool_)
    for b in range(buckets):
        table = rows.read(b)
        held = done.read(b)
        done_set = KeySet(key_text(held[key]), held[HASH].to_numpy())
        del held
        found = done_set.contains(key_text(table[key]), table[HASH].to_numpy())
        keep[table[ORD].to_numpy()[found]] = False
        del table, done_set
        rows.remove(b)
        done.remove(b)
    start = 0
    for table in _chunks(manifest, schema, key, budget // SPILL_SHARE, ReduceCounts()):
        kept = table.filter(pa.array(keep[start : start + table.num_rows]))
        start += table.num_rows
        writer.write(kept)
        counts.written += kept.num_rows


def _resolve(table: pa.Table, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the winning row of each key, in order of the key's first appearance in `table`,
    and the ordinal (column ORD, else position) of that first appearance.

    Rows must be in read order. The winner of a key is its row with the highest (status rank,
    position): the rule of `resolve.best_per_key`, computed per group of equal keys instead of by a
    sort of the strings.
    """
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    score = np.arange(n, dtype=np.int64)
    if "status" in table.column_names:
        score |= status_rank(table["status"]).to_numpy().astype(np.int64) << _POSITION_BITS
    keys = key_text(table[key])
    groups = hash_groups(keys, table[HASH].to_numpy() if HASH in table.column_names else None)
    if groups is None:
        best, first = _group_exact(keys, score)
    else:
        order, starts = groups
        best = np.maximum.reduceat(score[order], starts)
        first = np.minimum.reduceat(order, starts)
    by_first = _order_of_distinct(first, n)
    winners = best[by_first] & ((1 << _POSITION_BITS) - 1)
    first = first[by_first]
    if ORD in table.column_names:
        first = table[ORD].to_numpy()[first]
    return winners, first


def _order_of_distinct(values: np.ndarray, bound: int) -> np.ndarray:
    """argsort of distinct integers in [0, bound), in linear time (a scatter instead of a sort)."""
    slots = np.full(bound, -1, dtype=np.int64)
    slots[values] = np.arange(len(values))
    return slots[slots >= 0]


def _group_exact(keys: pa.Array, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max score and first position per key with Arrow's hash table: exact, for when two different
    keys share a 64-bit hash (slower and several times the memory, so only then)."""
    groups = (
        pa.table({"k": keys, "s": score, "p": np.arange(len(score), dtype=np.int64)})
        .group_by("k", use_threads=False)
        .aggregate([("s", "max"), ("p", "min")])
    )
    return groups["s_max"].to_numpy(), groups["p_min"].to_numpy()


def _gather(table: pa.Table, positions: np.ndarray) -> Iterator[pa.Table]:
    """table.take(positions) a slice at a time, so the gathered copy never exceeds one slice.

    `table` must be one chunk: pyarrow's take on a chunked table concatenates it on every call."""
    for lo in range(0, len(positions), SLICE_ROWS):
        yield table.take(pa.array(positions[lo : lo + SLICE_ROWS]))


def _write_ranges(ranges: Partitions, order_by: str, writer: TableWriter) -> None:
    """Emit the range files in order, each sorted by `order_by` in memory, without that column.

    `order_by` holds distinct ordinals (first appearances) from one interval: sorted by a scatter into
    that interval, in linear time, instead of a comparison sort."""
    for r in range(len(ranges.paths)):
        table = ranges.read(r)
        ordinals = table[order_by].to_numpy()
        low = int(ordinals.min()) if len(ordinals) else 0
        order = _order_of_distinct(ordinals - low, int(ordinals.max()) - low + 1 if len(ordinals) else 0)
        for piece in _gather(table.drop_columns([order_by]), order):
            writer.write(piece)
        del table
        ranges.remove(r)


_HASH_FIELD = pa.field(HASH, pa.uint64())


def _range_of(ordinals: np.ndarray, total: int, count: int) -> np.ndarray:
    return (ordinals * count // max(total, 1)).astype(id_type(count))


def _ordinals(start: int, count: int) -> pa.Array:
    return pa.array(np.arange(start, start + count, dtype=np.int64))


def _chunks(path: PathLike, schema: pa.Schema, key: str, whole: int, counts: ReduceCounts) -> Iterator[pa.Table]:
    """A file's rows, conformed to `schema`, keys checked, counted in `counts.rows`: read whole by
    pyarrow's parallel reader if it holds at most `whole` bytes, else streamed batch by batch."""
    first_row = counts.rows
    if _arrow_bytes(path) <= whole:
        tables: Iterable[pa.Table] = [read_table(path)]
    else:
        tables = (pa.Table.from_batches([batch]) for batch in iter_batches(path))
    for table in tables:
        table = _conform(table, schema, path)
        _check_keys(path, table, key, counts.rows - first_row)
        counts.rows += table.num_rows
        yield table


def _hold(keys: Iterator[Keys], budget: int) -> tuple[list[Keys], int]:
    """Take key arrays from the iterator until it ends or their KeySet would pass the budget; the
    bytes that KeySet will take (the strings plus its index)."""
    held: list[Keys] = []
    size = 0
    for pair in keys:
        held.append(pair)
        size += pair[0].nbytes + KEYSET_BYTES_PER_KEY * len(pair[0])
        if size > budget:
            break
    return held, size


def _drain(arrays: list[Keys]) -> Iterator[Keys]:
    """Yield and forget: each held array is freed once it has been spilled."""
    while arrays:
        yield arrays.pop(0)


class _KeySpool:
    """The done keys of a merge's winners, for the remaining step that follows it: held in memory while
    they fit `budget` (what `_hold` would take), then appended to one Arrow file of keys in `folder`."""

    def __init__(self, folder: str, key: str, has_status: bool, budget: int) -> None:
        self.key, self.has_status, self.budget = key, has_status, budget
        self.path = os.path.join(folder, "done-keys.arrow")
        self.held: list[pa.Array] = []
        self.nbytes = 0  # bytes of key text, held and spilled
        self._held_bytes = 0
        self._writer: pa.ipc.RecordBatchFileWriter | None = None

    def add(self, winners: pa.Table, hashes: np.ndarray | None) -> None:
        """`hashes`: the winners' `key_hash` where the merge has them (else they are computed here)."""
        if self.has_status:
            ok = pc.fill_null(pc.equal(winners["status"], "ok"), False)
            winners = winners.filter(ok)
            if hashes is not None:
                hashes = hashes[ok.to_numpy(zero_copy_only=False)]
        keys = key_text(winners[self.key])
        if hashes is None:
            hashes = keyhash.key_hash(keys)
        self.nbytes += keys.nbytes
        if self._writer is None and self._held_bytes <= self.budget:
            self.held.append((keys, hashes))
            self._held_bytes += keys.nbytes + KEYSET_BYTES_PER_KEY * len(keys)
            return
        if self._writer is None:
            self._writer = pa.ipc.new_file(self.path, pa.schema([(self.key, pa.string()), _HASH_FIELD]))
        self._writer.write_batch(pa.record_batch([keys, pa.array(hashes)], names=[self.key, HASH]))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def keys(self) -> Iterator[Keys]:
        """Held keys (each forgotten once taken), then the spilled ones, batch by batch, with their hashes."""
        yield from _drain(self.held)
        if self._writer is not None:  # read, not mapped: mapped pages once touched would stay in RSS
            with pa.OSFile(self.path) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    yield batch.column(0), batch.column(1).to_numpy()


def _ok_keys(rows: pa.Table | pa.RecordBatch, key: str, has_status: bool) -> pa.Array:
    """The keys (as text) of the rows that count as done: all of them, or the `ok` ones if there is a status."""
    if has_status:
        rows = rows.filter(pc.fill_null(pc.equal(rows["status"], "ok"), False))
    return key_text(rows[key])


def _done_keys(done_columns: dict[PathLike, list[str]], key: str) -> Iterator[Keys]:
    """Keys (as text) of the done rows, batch by batch: all rows, or only `ok` ones where there is a status."""
    for path, columns in done_columns.items():
        row = 0
        for batch in iter_batches(path, columns=columns):
            _check_keys(path, batch, key, row)
            row += batch.num_rows
            yield _ok_keys(batch, key, "status" in columns), None


def _check_keys(path: PathLike, rows: pa.Table | pa.RecordBatch, key: str, first_row: int = 0) -> None:
    """A null or empty key is refused, naming the file and data row (1 = first row after the header)."""
    empty = pc.fill_null(pc.equal(pc.utf8_length(key_text(rows[key])), 0), True)
    if pc.any(empty).as_py():
        raise UserError(f"{path}: row {first_row + pc.index(empty, True).as_py() + 1}: empty '{key}'")


def _union_schema(parts: Sequence[PathLike], key: str) -> pa.Schema:
    """Columns of all parts in order of first appearance; checks that every part is readable and keyed."""
    types: dict[str, pa.DataType] = {}
    for path in parts:
        schema = _file_schema(path)
        check_key_column(path, schema.names, key)
        for f in schema:
            types[f.name] = f.type if f.name not in types else _common_type(types[f.name], f.type)
    return pa.schema(list(types.items()))


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Arrow's own widening (int32 + int64, null + anything); text where the types do not meet."""
    if a == b:
        return a
    try:
        return pa.unify_schemas(
            [pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive"
        ).field("c").type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()


def _file_schema(path: PathLike) -> pa.Schema:
    """The schema rows of `path` are read with: text columns for CSV, the stored types for Parquet."""
    names = file_columns(path)
    if manifest_format(path) == "csv":
        return pa.schema([(n, pa.string()) for n in names])
    return pq.read_schema(path).remove_metadata()


def _conform(table: pa.Table, schema: pa.Schema, path: PathLike) -> pa.Table:
    """`table` with exactly `schema`'s columns: missing ones null, others cast.

    A missing `status` is `ok`, not null: a part without one holds finished captions, and a merged
    file must say so, since `remaining` counts only `ok` rows of a file that has a status column."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            missing = pa.nulls(table.num_rows, type=f.type)
            columns.append(pc.fill_null(missing, pa.scalar("ok", f.type)) if f.name == "status" else missing)
            continue
        column = table[f.name]
        if column.type != f.type:
            try:
                column = pc.cast(column, f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise UserError(f"{path}: column '{f.name}' does not convert to {f.type} ({exc})") from None
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _arrow_bytes(path: PathLike, columns: list[str] | None = None) -> int:
    """About how many bytes of Arrow data reading `path` (those columns) gives, without reading it.

    Parquet: the uncompressed sizes in its footer. CSV: the file size (an upper bound when only some
    columns are read), times a ratio when compressed."""
    if manifest_format(path) == "csv":
        size = os.path.getsize(path)
        return size if str(path).lower().endswith(".csv") else size * _COMPRESSED_CSV_RATIO
    meta = pq.ParquetFile(path).metadata
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if columns is None or chunk.path_in_schema.split(".")[0] in columns:
                total += chunk.total_uncompressed_size
    return total


def _tally(counts: ReduceCounts, winners: pa.Table) -> None:
    """Count the kept rows by status (a part without status is all finished captions: ok)."""
    counts.written += winners.num_rows
    if "status" not in winners.column_names:
        counts.ok += winners.num_rows
        return
    status = pc.fill_null(winners["status"], "ok")
    for name in ("ok", "error", "skipped"):
        setattr(counts, name, getattr(counts, name) + (pc.sum(pc.equal(status, name)).as_py() or 0))


@contextmanager
def _atomic(output: PathLike) -> Iterator[str]:
    """A temporary name next to `output`, renamed onto it (durably) only if the block finishes; flushed to
    disk while it is written (`flushed_as_written`), so that little is left for the final fsync."""
    with atomic_path(output) as tmp, flushed_as_written(tmp):
        yield str(tmp)


@contextmanager
def _scratch(output: PathLike, tmp_dir: PathLike | None) -> Iterator[str]:
    """A fresh folder for the bucket files, next to the output or in `tmp_dir`; removed whatever happens."""
    parent = tmp_dir if tmp_dir is not None else os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UserError(f"{parent}: temporary folder does not exist")
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", suffix=".buckets", dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
