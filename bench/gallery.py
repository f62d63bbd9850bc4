"""Benchmark: building a gallery for 1,000 videos, and opening the page for 100k rows in Chromium.

Build: a run of VIDEOS rows (split by `vidcap split`, results written through the result store as a
finished caption run would have them, a few rows as errors), then `build_gallery` twice over the same
run: baseline `readers=0` (frames read in the building process, one video after another) and
`readers=N` (N prefetch processes). Printed: wall time, videos/s, thumbnails/s, and the ratio.
The videos are DISTINCT synthetic clips copied to VIDEOS files (each file is read and decoded on its own).

Page: galleries of ROWS (1k, the build above) and BIG rows (100k: an output file whose rows cycle over
the same videos; each distinct video is read once) opened from disk in headless Chromium (Debian's
chromium + chromium-driver, selenium). Load time = performance.now() when the first page's cards and
every thumbnail have loaded (the page sets VG_READY_MS), median of LOADS fresh loads; also a jump to page
10 of a status filter, and a search that has to scan every chunk. Ratio: 100k against 1k.

    .venv/bin/python bench/gallery.py
    .venv/bin/python bench/gallery.py --videos 200 --big 20000 --readers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vidcap.cli import main as vidcap
from vidcap.gallery import build_gallery
from vidcap.manifest.split import load_shard
from vidcap.results import ResultWriter, result_rows
from vidcap.run import RunDir
from vidcap.fixtures.synth import make_video

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench" / "gallery"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def clips(distinct: int, width: int, height: int) -> list[Path]:
    """Distinct 2 s clips at 24 fps, cached in .cache/bench/gallery/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(distinct):
        path = CACHE / f"clip-{width}x{height}-{seed:03d}.mp4"
        if not path.exists():
            part = path.with_suffix(".part.mp4")
            make_video(part, seconds=2.0, fps=24, width=width, height=height, seed=seed)
            part.rename(path)
        paths.append(path)
    return paths


def make_run(folder: Path, sources: list[Path], videos: int) -> RunDir:
    """VIDEOS video files and a finished caption run over them (every 25th row an error)."""
    media = folder / "media"
    media.mkdir(parents=True)
    for i in range(videos):
        shutil.copyfile(sources[i % len(sources)], media / f"v{i:05d}.mp4")
    manifest = folder / "manifest.csv"
    manifest.write_text("path,source\n" + "".join(f"media/v{i:05d}.mp4,bench\n" for i in range(videos)))
    run = RunDir.at(folder / "run")
    assert vidcap(["split", str(manifest), "--run", str(run.root), "--rows-per-shard", "250"]) == 0
    for index in range(run.num_shards):
        keys = load_shard(run, index)["path"].to_pylist()
        with ResultWriter(run, index) as writer:
            writer.append(result_rows(
                {"key": k, "status": "error", "error": "no video stream"} if int(k[7:12]) % 25 == 3 else
                {"key": k, "status": "ok", "text": f"a synthetic clip number {int(k[7:12])} with coloured cells"}
                for k in keys))
    return run


def freeze_caption_task(run: RunDir) -> None:
    """The frame plan the gallery reads: a caption task of 3 frames at short side 224."""
    from vidcap.tasks.spec import TaskSpec, freeze_spec
    from vidcap.tasks import task_settings

    spec = TaskSpec(task="caption", settings=task_settings("caption", {"num_frames": 3, "resize": 224}),
                    engine="noop")
    freeze_spec(run, spec)


def build(run: RunDir, out: Path, readers: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    result = build_gallery(str(run.root), out, readers=readers, progress=False)
    return time.perf_counter() - started, result.videos, result.thumbnails


def big_output(folder: Path, rows: int, videos: int) -> Path:
    """An output file of `rows` rows (key `id`) over the run's videos, with some errors and tags."""
    i = np.arange(rows)
    status = np.where(i % 25 == 3, "error", "ok")
    table = pa.table({
        "id": [f"row{n:07d}" for n in i],
        "path": [f"media/v{n % videos:05d}.mp4" for n in i],
        "text": [f"caption of row {n}" if s == "ok" else "" for n, s in zip(i, status)],
        "status": status, "error": np.where(status == "error", "no video stream", ""),
        "objects": pa.array([["dog", "ball"] if n % 3 == 0 else ["cat"] for n in i], pa.list_(pa.string())),
    })
    path = folder / "big.parquet"
    pq.write_table(table, path)
    return path


def driver():  # noqa: ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def load_ms(browser, gallery: Path, hash_: str = "") -> float:  # noqa: ANN001
    browser.get("about:blank")
    browser.get(gallery.joinpath("index.html").as_uri() + hash_)
    deadline = time.monotonic() + 120
    while not browser.execute_script("return document.body && document.body.dataset.ready === '1'"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{gallery}: page not ready after 120 s")
        time.sleep(0.01)
    return float(browser.execute_script("return window.VG_READY_MS"))


def data_read(browser, gallery: Path) -> tuple[int, int]:  # noqa: ANN001
    """(chunks the page loaded, bytes of data scripts: meta.js and those chunks) for what it shows now."""
    chunks = browser.execute_script("return window.VG_LOADED")
    data = gallery / "data"
    size = (data / "meta.js").stat().st_size + sum((data / f"chunk-{c:05d}.js").stat().st_size for c in chunks)
    return len(chunks), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=40, help="distinct clips copied to --videos files")
    parser.add_argument("--size", default="256x144")
    parser.add_argument("--readers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--big", type=int, default=100_000, help="rows of the large page")
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-gallery-"))
    try:
        sources = clips(args.distinct, width, height)
        run = make_run(work, sources, args.videos)
        freeze_caption_task(run)
        print(f"gallery build: {args.videos} videos ({width}x{height}, 2 s, 24 fps; 3 frames at short side 224), "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        base_s, videos, thumbs = build(run, work / "g0", readers=0)
        print(f"  readers=0 (baseline, one process): {base_s:6.1f} s  {videos / base_s:6.1f} videos/s  "
              f"{thumbs / base_s:6.1f} thumbnails/s")
        fast_s, videos, thumbs = build(run, work / "g1k", readers=args.readers)
        print(f"  readers={args.readers} (prefetch processes):  {fast_s:6.1f} s  {videos / fast_s:6.1f} videos/s  "
              f"{thumbs / fast_s:6.1f} thumbnails/s")
        print(f"  speed-up: {base_s / fast_s:.2f}x   (load average now {os.getloadavg()[0]:.1f}: other work on "
              f"these CPUs takes from the readers)")

        big = big_output(work, args.big, args.videos)
        started = time.perf_counter()
        result = build_gallery(str(big), work / "gbig", key="id", run=str(run.root), readers=args.readers,
                               progress=False)
        big_s = time.perf_counter() - started
        data = sum(p.stat().st_size for p in (work / "gbig" / "data").iterdir())
        meta = (work / "gbig" / "data" / "meta.js").stat().st_size
        print(f"gallery build: {args.big} rows over {result.videos} videos: {big_s:.1f} s "
              f"({result.chunks} chunks, data {data / 1e6:.1f} MB, meta.js {meta / 1e3:.0f} kB)")

        browser = driver()
        try:
            timings = {}
            small_name, big_name = f"{args.videos:,}", f"{args.big:,}"
            for name, folder in ((small_name, work / "g1k"), (big_name, work / "gbig")):
                load_ms(browser, folder)  # warm the file cache
                first = [load_ms(browser, folder) for _ in range(args.loads)]
                jump = [load_ms(browser, folder, "#status=ok&page=10") for _ in range(args.loads)]
                scan = [load_ms(browser, folder, "#q=no-such-text") for _ in range(max(1, args.loads // 2))]
                timings[name] = (statistics.median(first), statistics.median(jump), statistics.median(scan))
                load_ms(browser, folder)
                chunks, size = data_read(browser, folder)
                print(f"page load, {name} rows: first page {timings[name][0]:7.0f} ms ({chunks} chunk, "
                      f"{size / 1e3:.0f} kB of data)   status=ok page 10 {timings[name][1]:7.0f} ms   "
                      f"search scanning every chunk {timings[name][2]:7.0f} ms")
            small, large = timings[small_name], timings[big_name]
            print(f"  ratio {big_name} / {small_name} rows: first page {large[0] / small[0]:.2f}x   "
                  f"filtered page {large[1] / small[1]:.2f}x"
                  f"   full-scan search {large[2] / small[2]:.1f}x (rows: {args.big / args.videos:.0f}x)")
        finally:
            browser.quit()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
