"""Benchmark: Open-Sora merge + remaining, ours (pyarrow, bucketed) against a pandas baseline.

For each size it makes a synthetic manifest (path,num_frames,height,width,aspect_ratio,fps) and 64 CSV
result parts (path,text; every 4th part also has status) in which ~10% of the manifest is missing,
~20% of keys appear in two parts and ~5% in three. Each side runs in its own subprocess, so its peak
RSS is its own, and does the same job: write the merged file and the remaining file (ours: the fused
`merge_and_remaining`, as `vidcap merge ... --remaining MANIFEST OUT` runs it). With
--repeat N the two sides alternate N times and each keeps its best time (the machine may be shared:
the load average is printed, and CPU seconds are shown beside wall seconds).

    .venv/bin/python bench/reduce.py                 # 1M and 4M rows
    .venv/bin/python bench/reduce.py --rows 100000   # quick
    .venv/bin/python bench/reduce.py --rows 3000000 30000000 --baseline-max-rows 3000000
                                                     # Open-Sora's scale: 30M rows, < 60 s and < 2 GB
                                                     # (pandas only up to 3M: it needs far more memory)
    .venv/bin/python bench/reduce.py --rows 30000000 --data-dir /var/tmp/vidcap-reduce   # data kept for reruns
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

WORDS = (
    "a person walks slowly along the beach at sunset, waves rolling in while the camera pans left "
    "to show \"golden\" light over rocks; a dog runs past children playing near the water and birds "
    "fly above the calm sea under a pink sky as the scene fades"
).split()
TARGET_SPEEDUP = 5.0
#: Open-Sora's scale (issue 11): merge + remaining of 30M rows
SCALE_ROWS, SCALE_SECONDS, SCALE_MB = 30_000_000, 60.0, 2048


def make_data(folder: str, rows: int, parts: int, seed: int = 0) -> None:
    """Manifest DATA.csv and parts DATA_caption_partNN.csv, built columnar (seconds, even at 4M)."""
    rng = np.random.default_rng(seed)
    ids = pa.array(np.arange(rows))
    paths = pc.binary_join_element_wise(
        "/data/videos/", pc.utf8_lpad(ids.cast(pa.string()), 9, "0"), ".mp4", ""
    )
    frames = rng.integers(48, 2000, rows)
    manifest = pa.table({
        "path": paths,
        "num_frames": pa.array(frames).cast(pa.string()),
        "height": pa.array(rng.choice([480, 720, 1080], rows)).cast(pa.string()),
        "width": pa.array(rng.choice([640, 1280, 1920], rows)).cast(pa.string()),
        "aspect_ratio": pa.array(rng.choice(["0.5625", "0.75"], rows)),
        "fps": pa.array(rng.choice(["24.0", "25.0", "29.97", "30.0"], rows)),
    })
    pacsv.write_csv(manifest, os.path.join(folder, "DATA.csv"))

    covered = rng.permutation(rows)[: int(rows * 0.9)]
    times = 1 + (rng.random(len(covered)) < 0.20) + (rng.random(len(covered)) < 0.05)
    key_ids = np.repeat(covered, times)
    part_of = rng.integers(0, parts, len(key_ids))
    order = np.lexsort((key_ids, part_of))  # each part in manifest order, like one worker's output
    key_ids, part_of = key_ids[order], part_of[order]
    words = pa.array(WORDS, pa.large_string())  # 30M rows of text pass 2 GiB: 64-bit offsets
    text = pc.binary_join_element_wise(
        *[words.take(pa.array(rng.integers(0, len(WORDS), len(key_ids)))) for _ in range(16)],
        pa.scalar(" ", pa.large_string()),
    )
    status = pa.array(np.where(rng.random(len(key_ids)) < 0.03, "error", "ok"))
    text = pc.if_else(pc.equal(status, "ok"), text, pa.scalar("", pa.large_string()))
    results = pa.table({"path": paths.take(pa.array(key_ids)), "text": text, "status": status})
    bounds = np.searchsorted(part_of, np.arange(parts + 1))
    for p in range(parts):
        part = results.slice(bounds[p], bounds[p + 1] - bounds[p])
        if p % 4 != 3:
            part = part.drop_columns(["status"])
        pacsv.write_csv(part, os.path.join(folder, f"DATA_caption_part{p:02d}.csv"))


COMPLETE = ".complete"  # marks a kept data folder whose making finished


def data_folder(args: argparse.Namespace, rows: int) -> tuple[str, bool]:
    """Where the data for `rows` goes, and whether it is already there: a fresh temporary folder, or with
    --data-dir a kept one (making 30M rows takes minutes; it is reused by later runs with the same --parts)."""
    if not args.data_dir:
        return tempfile.mkdtemp(prefix=f"vidcap-bench-reduce-{rows}-", dir=args.tmp_dir), False
    folder = os.path.join(args.data_dir, f"rows-{rows}-parts-{args.parts}")
    if os.path.exists(os.path.join(folder, COMPLETE)):
        return folder, True
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder, False


def part_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("DATA_caption_part"))


def run_ours(folder: str, budget_mb: int) -> dict:
    """What `vidcap merge PARTS -o merged.csv --remaining DATA.csv remaining.csv` runs: the fused merge and
    remaining (the remaining step takes the merged done keys from the merge instead of reading them back)."""
    from vidcap.manifest.reduce_parts import merge_and_remaining

    start = time.perf_counter()
    merged, rest = merge_and_remaining(
        part_files(folder), os.path.join(folder, "ours_merged.csv"),
        os.path.join(folder, "DATA.csv"), os.path.join(folder, "ours_remaining.csv"), memory_budget=budget_mb << 20,
    )
    end = time.perf_counter()
    return {"seconds": end - start, "phases": {"merge+remaining": end - start},
            "merged": merged.written, "remaining": rest.written}


def run_pandas(folder: str) -> dict:
    """Read all parts, concat, drop_duplicates(keep=last), isin: the usual notebook reducer."""
    import pandas as pd

    start = time.perf_counter()
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in part_files(folder)]
    manifest = pd.read_csv(os.path.join(folder, "DATA.csv"), dtype=str, keep_default_na=False)
    read = time.perf_counter()
    merged = pd.concat(frames, ignore_index=True).drop_duplicates(subset="path", keep="last")
    done = merged["path"][merged["status"].fillna("ok") == "ok"]
    remaining = manifest[~manifest["path"].isin(done)]
    compute = time.perf_counter()
    merged.to_csv(os.path.join(folder, "pandas_merged.csv"), index=False)
    remaining.to_csv(os.path.join(folder, "pandas_remaining.csv"), index=False)
    end = time.perf_counter()
    return {"seconds": end - start, "phases": {"read": read - start, "compute": compute - read, "write": end - compute},
            "merged": len(merged), "remaining": len(remaining)}


def run_floor(folder: str) -> dict:
    """A bound no merge + remaining of these files can beat on this machine: parse every input once, whole,
    with pyarrow's multi-threaded reader (the options vidcap reads CSV with: every column text, newlines
    allowed in quoted values) and write every part row back out as one CSV, fsynced. No keys, buckets or
    spill; it writes all part rows (the merged file keeps about 4 in 5) and no remaining file."""
    from vidcap.manifest.io import read_table

    start = time.perf_counter()
    with open(os.path.join(folder, "floor_copy.csv"), "wb") as sink:
        writer = None
        for path in part_files(folder):
            table = read_table(path).select(["path", "text"])
            writer = writer or pacsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
        read_parts = time.perf_counter()
        read_table(os.path.join(folder, "DATA.csv"))
        read_manifest = time.perf_counter()
        writer.close()
        sink.flush()
        os.fsync(sink.fileno())
    end = time.perf_counter()
    return {"seconds": end - start, "phases": {"parts read+written": read_parts - start,
                                               "manifest read": read_manifest - read_parts,
                                               "fsync": end - read_manifest}}


def child(side: str, folder: str, budget_mb: int, rows: int, parts: int) -> None:
    if side == "make":
        make_data(folder, rows, parts)
        return
    result = {"ours": lambda: run_ours(folder, budget_mb), "pandas": lambda: run_pandas(folder),
              "floor": lambda: run_floor(folder)}[side]()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_mb"] = usage.ru_maxrss / 1024
    result["cpu"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(result))


def in_child(side: str, folder: str, args: argparse.Namespace, rows: int) -> str:
    """Run one step in a fresh interpreter: its own imports, its own peak RSS. The data is made in a
    child too: Linux carries the peak RSS across fork and exec, so a parent that had made 4M rows
    would lend its peak to every later child."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, "--data", folder, "--budget-mb", str(args.budget_mb),
         "--rows", str(rows), "--parts", str(args.parts)],
        check=True, capture_output=True, text=True,
    )
    return out.stdout


def measure(side: str, folder: str, args: argparse.Namespace) -> dict:
    return json.loads(in_child(side, folder, args, 0).strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    """The fastest run, with the highest peak RSS seen over all runs (memory does not get lucky)."""
    fastest = dict(min(runs, key=lambda r: r["seconds"]))
    fastest["peak_mb"] = max(r["peak_mb"] for r in runs)
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--parts", type=int, default=64)
    parser.add_argument("--budget-mb", type=int, default=256,
                        help="our memory budget: inputs that fit it are merged in memory (past it, buckets of 64 MB)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (alternating); best time kept")
    parser.add_argument("--tmp-dir", default=None, help="where the synthetic data goes (default: system temp)")
    parser.add_argument("--data-dir", default=None,
                        help="keep the synthetic data here and reuse it in later runs (default: made and removed)")
    parser.add_argument("--baseline-max-rows", type=int, default=None,
                        help="run the pandas baseline only up to this many rows (its memory grows with them)")
    parser.add_argument("--floor", action="store_true",
                        help="also time a bound on this machine: parse every input once, write the part rows once")
    parser.add_argument("--child", choices=["make", "ours", "pandas", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.budget_mb, args.rows[0], args.parts)
        return

    print(f"reduce benchmark: {args.parts} CSV parts, budget {args.budget_mb} MB, {os.cpu_count()} cores, "
          f"pyarrow {pa.__version__}, load average {os.getloadavg()[0]:.1f}")
    results = {}
    scale: list[tuple[int, dict]] = []
    for rows in args.rows:
        folder, made = data_folder(args, rows)
        try:
            t = time.perf_counter()
            if not made:
                in_child("make", folder, args, rows)
                if args.data_dir:
                    open(os.path.join(folder, COMPLETE), "w").close()
            input_mb = sum(os.path.getsize(p) for p in part_files(folder) + [os.path.join(folder, "DATA.csv")]) / 2**20
            how = "reused" if made else f"made in {time.perf_counter() - t:.1f}s"
            print(f"\n{rows:,} manifest rows: data {how} ({input_mb:,.0f} MB of CSV)")
            baseline = args.baseline_max_rows is None or rows <= args.baseline_max_rows
            runs: dict[str, list[dict]] = {"pandas": [], "ours": []} if baseline else {"ours": []}
            for _ in range(args.repeat):
                for side in runs:
                    runs[side].append(measure(side, folder, args))
            ours = best(runs["ours"])
            if args.floor:
                floor = measure("floor", folder, args)
                phases = ", ".join(f"{k} {v:.2f}s" for k, v in floor["phases"].items())
                print(f"  floor   {floor['seconds']:7.2f}s (cpu {floor['cpu']:6.1f}s)  parse every input once, write "
                      f"the part rows once ({phases}); ours is {ours['seconds'] / floor['seconds']:.1f}x the floor")
            pandas = best(runs["pandas"]) if baseline else None
        finally:
            if args.data_dir:
                for name in os.listdir(folder):
                    if name.startswith(("ours_", "pandas_", "floor_")):
                        os.unlink(os.path.join(folder, name))
            else:
                shutil.rmtree(folder, ignore_errors=True)
        if pandas is None:
            r = ours
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items())
            print(f"  ours    {r['seconds']:7.2f}s (cpu {r['cpu']:6.1f}s)  peak RSS {r['peak_mb']:6.0f} MB  "
                  f"merged {r['merged']:,} remaining {r['remaining']:,}  ({phases}); pandas not run at this size")
            scale.append((rows, ours))
            continue
        scale.append((rows, ours))
        for name, r in (("pandas", pandas), ("ours", ours)):
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items())
            print(f"  {name:7s} {r['seconds']:7.2f}s (cpu {r['cpu']:6.1f}s)  peak RSS {r['peak_mb']:6.0f} MB  "
                  f"merged {r['merged']:,} remaining {r['remaining']:,}  ({phases})")
        no_write = pandas["seconds"] - pandas["phases"]["write"]
        print(f"  ratio   {pandas['seconds'] / ours['seconds']:.1f}x faster (pandas without its writes: "
              f"{no_write / ours['seconds']:.1f}x; cpu {pandas['cpu'] / ours['cpu']:.1f}x), "
              f"{pandas['peak_mb'] / ours['peak_mb']:.1f}x less memory  (load average {os.getloadavg()[0]:.1f})")
        if (pandas["merged"], pandas["remaining"]) != (ours["merged"], ours["remaining"]):
            print("  NOTE: row counts differ (pandas keeps the last row, ours prefers ok over error)")
        results[rows] = (pandas, ours)

    big = [(n, r) for n, r in scale if n >= SCALE_ROWS]
    if big:
        n, r = big[0]
        ok = r["seconds"] < SCALE_SECONDS and r["peak_mb"] < SCALE_MB
        print(f"\n{n:,} rows (Open-Sora's scale): {r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB; target < "
              f"{SCALE_SECONDS:.0f} s and < {SCALE_MB} MB: {'MET' if ok else 'MISSED'} (load average "
              f"{os.getloadavg()[0]:.1f})")
        small = [(m, q) for m, q in scale if m < n]
        if small:
            m, q = small[-1]
            print(f"  against ours at {m:,} rows in the same run: {r['seconds'] / q['seconds']:.1f}x the time for "
                  f"{n / m:.0f}x the rows, {r['peak_mb'] / q['peak_mb']:.2f}x the memory")
    if not results:
        return
    print("\ntargets:")
    speedups = {n: p["seconds"] / o["seconds"] for n, (p, o) in results.items()}
    met = all(s >= TARGET_SPEEDUP for s in speedups.values())
    print(f"  >= {TARGET_SPEEDUP:.0f}x faster: {'MET' if met else 'MISSED'} "
          f"({', '.join(f'{n:,} rows {s:.1f}x' for n, s in speedups.items())})")
    if len(results) > 1:
        small, large = min(results), max(results)
        growth = results[large][1]["peak_mb"] / results[small][1]["peak_mb"]
        pandas_growth = results[large][0]["peak_mb"] / results[small][0]["peak_mb"]
        flat = growth < 0.5 * large / small
        print(f"  memory not proportional to rows: {'MET' if flat else 'MISSED'} (rows x{large / small:.1f}: "
              f"our peak x{growth:.2f}, pandas peak x{pandas_growth:.2f})")


if __name__ == "__main__":
    main()
