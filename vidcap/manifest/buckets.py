"""Hash partitioning of rows to Arrow IPC files on disk, for reducers whose input outgrows memory.

A key always lands in the same bucket (`bucket_of`, from the hash of its bytes), so a dedup or
anti-join can be done one bucket at a time in memory. `Partitions` holds B append-only IPC files;
rows keep the order they were appended in.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa

from vidcap.manifest.keyhash import key_hash

MAX_BUCKETS = 512  # one open file each; far below the usual 1024 open-files limit (and ids fit 16 bits)


def bucket_count(nbytes: int, budget: int) -> int:
    """How many buckets keep each one under `budget` bytes (1: everything fits, no disk at all)."""
    return max(1, min(MAX_BUCKETS, math.ceil(nbytes / max(budget, 1))))


def bucket_of(keys: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Bucket number (0..buckets-1) of each key, the same for equal keys in any batch or file."""
    return bucket_of_hash(key_hash(keys), buckets)


def bucket_of_hash(hashes: np.ndarray, buckets: int) -> np.ndarray:
    """`bucket_of` from the keys' `key_hash` (a caller that keeps the hashes hashes each key once)."""
    return (hashes % np.uint64(buckets)).astype(id_type(buckets))


def id_type(count: int) -> type:
    """The narrowest integer type for partition numbers below `count`: numpy's stable argsort (grouping rows
    by partition) is a radix sort for 8- and 16-bit integers, several times faster than for 32-bit ones."""
    return np.uint8 if count <= 1 << 8 else np.uint16


class Partitions:
    """`count` append-only Arrow IPC files in `folder`, one per partition, all with one schema."""

    def __init__(self, folder: str, name: str, count: int, schema: pa.Schema) -> None:
        self.paths = [os.path.join(folder, f"{name}-{i:04d}.arrow") for i in range(count)]
        self.schema = schema
        self._writers = [pa.ipc.new_file(p, schema) for p in self.paths]

    def append(self, rows: pa.Table | pa.RecordBatch, ids: np.ndarray) -> None:
        """Append each row to partition ids[row], keeping the rows' relative order in each partition.

        Rows already grouped by partition (ids never decrease) are written as slices, without a copy."""
        if len(ids) and np.all(ids[1:] >= ids[:-1]):
            grouped = rows
        else:
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            grouped = rows.take(pa.array(order))
        bounds = np.searchsorted(ids, np.arange(len(self.paths) + 1))
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if hi > lo:
                self._write(i, grouped.slice(lo, hi - lo))

    def _write(self, i: int, rows: pa.Table | pa.RecordBatch) -> None:
        if isinstance(rows, pa.RecordBatch):
            self._writers[i].write_batch(rows)
        else:
            self._writers[i].write_table(rows)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def read(self, i: int) -> pa.Table:
        """Partition i as one contiguous table: it was appended in many small slices, and hash
        aggregation and `take` run several times faster on one chunk than on hundreds."""
        with pa.memory_map(self.paths[i]) as source:
            return pa.ipc.open_file(source).read_all().combine_chunks()

    def remove(self, i: int) -> None:
        """Drop a consumed partition's file: the disk holds at most one copy of the data.

        The memory it took is not handed back to the OS here (release_unused): the next partition reuses
        it, where fresh pages would have to be faulted in and zeroed again (at 30M rows, a bucket at a time
        on two threads, that was about 2 s of system time for no saving in peak memory)."""
        os.unlink(self.paths[i])
