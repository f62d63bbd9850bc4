"""Which result of a key counts: the rule shared by every reducer.

An `ok` result beats a `skipped` one, which beats an `error`; among results of equal rank the latest
(last written) wins. `failures` counts a key's `error` results, for `--max-attempts`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STATUS_RANK = {"ok": 2, "skipped": 1, "error": 0}
ORDINAL = "_ord"


def status_rank(status: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Rank of each status (unknown or missing statuses rank with `ok`: a part file without a status
    column is a list of finished captions)."""
    ranks = np.full(len(status), STATUS_RANK["ok"], dtype=np.int8)
    values = pc.fill_null(status, "ok")
    for name, rank in STATUS_RANK.items():
        if rank != STATUS_RANK["ok"]:
            ranks[pc.equal(values, name).to_numpy(zero_copy_only=False)] = rank
    return pa.array(ranks)


def best_per_key(results: pa.Table, key: str = "key") -> pa.Table:
    """One row per key, the one that counts, plus `failures` (how many `error` results the key had).

    Rows must be in write order (later rows newer). The output is in no particular order.
    """
    if results.num_rows == 0:
        return results.append_column("failures", pa.array([], type=pa.int64()))
    n = results.num_rows
    has_status = "status" in results.column_names
    rank = status_rank(results["status"]) if has_status else pa.array(np.full(n, 2, dtype=np.int8))
    helper = pa.table({"k": results[key], "rank": rank, ORDINAL: pa.array(np.arange(n, dtype=np.int64))})
    order = pc.sort_indices(helper, sort_keys=[("k", "ascending"), ("rank", "descending"), (ORDINAL, "descending")])
    sorted_keys = pc.take(helper["k"], order)
    first = np.ones(n, dtype=bool)
    if n > 1:
        first[1:] = pc.not_equal(sorted_keys.slice(1), sorted_keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    winners = results.take(pc.filter(order, pa.array(first)))
    if has_status:
        errors = pa.table({"k": results[key], "e": pc.cast(pc.equal(results["status"], "error"), pa.int64())})
        counts = errors.group_by("k", use_threads=False).aggregate([("e", "sum")])
        failures = winners.select([key]).join(counts, keys=key, right_keys="k", join_type="left outer")
        # join reorders: align by key
        failures = failures.sort_by(key)
        winners = winners.sort_by(key)
        winners = winners.append_column("failures", pc.fill_null(failures["e_sum"], 0))
    else:
        winners = winners.append_column("failures", pa.array(np.zeros(winners.num_rows, dtype=np.int64)))
    return winners
