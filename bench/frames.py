"""Benchmark: 3 frames from 720p H.264 videos, our reader against decoding every frame, and OpenCV seeking.

Methods, each on the same file, in one process, one after the other:
  ours (pyav)   vidcap.frames.read_frames (packet scan, seek only past a new keyframe, exact)
  ours (decord) vidcap.frames.read_frames(backend="decord")
  decode-all    PyAV decodes every frame and keeps the 3 wanted ones (what Open-Sora's PLLaVA-style
                loaders do), converting only those 3 to RGB and holding no others; PyAV's default
                threading, as ours
  opencv seek   cv2.VideoCapture + CAP_PROP_POS_FRAMES per frame (fast, but wrong frames on VFR and
                truncated files, so never used for picking)
Every method's frames are checked against the frame signatures the synthetic videos carry.

Videos (synthetic, cached in .cache/bench/) are 10 s and 60 s of 1280x720 at 30 fps. The keyframe
interval (GOP) decides how much a seek saves, so each is made with a 72-frame GOP (2.4 s, typical of
cameras and streaming; 72 rather than 60 because a 60-frame GOP puts 0.1/0.5/0.9 of a 60 s video exactly
on keyframes, a best case, while 72 puts them mid-GOP, the average case) and with x264's default of 250
frames (~8 s: what a plain `ffmpeg -i in.mov out.mp4` gives, the worst common case). Figures are videos/s
and milliseconds (wall and CPU) per video, medians of the repeats, with the ratio to decode-all measured
in the same run.

    .venv/bin/python bench/frames.py                    # 10 s and 60 s, GOP 72 and 250
    .venv/bin/python bench/frames.py --seconds 10 --gops 72 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

from vidcap.frames import read_frames, sample_indices
from vidcap.fixtures.synth import frame_signature, make_video

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"
NUM_FRAMES = 3


def video(seconds: int, gop: int) -> Path:
    """The cached benchmark video (made on first use: ~1 s of encoding per second of video)."""
    path = CACHE / f"720p-{seconds}s-gop{gop}.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"  making {path.name} ...", file=sys.stderr, flush=True)
        partial = path.with_suffix(".part.mp4")
        make_video(partial, seconds=seconds, fps=30, width=1280, height=720, gop=gop, seed=seconds * 1000 + gop)
        partial.rename(path)
    return path


def ours_pyav(path: Path) -> tuple[list[int], list[np.ndarray]]:
    result = read_frames(str(path), NUM_FRAMES)
    return result.indices, result.frames


def ours_decord(path: Path) -> tuple[list[int], list[np.ndarray]]:
    result = read_frames(str(path), NUM_FRAMES, backend="decord")
    return result.indices, result.frames


def decode_all(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """Every frame decoded, only the wanted ones kept and converted (the cheapest form of decode-all:
    loaders that keep or convert every frame are slower still)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        indices = sample_indices(NUM_FRAMES, stream.frames)
        frames = [frame.to_ndarray(format="rgb24") for i, frame in enumerate(container.decode(stream))
                  if i in indices]
    return indices, frames


def opencv_seek(path: Path) -> tuple[list[int], list[np.ndarray]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    indices = sample_indices(NUM_FRAMES, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    frames = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok:
            raise RuntimeError(f"OpenCV could not read frame {index}")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return indices, frames


METHODS = {"ours (pyav)": ours_pyav, "ours (decord)": ours_decord, "decode-all": decode_all,
           "opencv seek": opencv_seek}


def correct(indices: list[int], frames: list[np.ndarray]) -> bool:
    try:
        return [frame_signature(frame)[1] for frame in frames] == indices
    except ValueError:
        return False


def measure(path: Path, repeats: int) -> dict[str, tuple[float, float, bool]]:
    """Median wall and CPU seconds per video, and correctness, per method. Methods interleave so that a
    change of load hits all alike; CPU time is the steadier figure on a shared machine."""
    walls: dict[str, list[float]] = {name: [] for name in METHODS}
    cpus: dict[str, list[float]] = {name: [] for name in METHODS}
    right: dict[str, bool] = {}
    for _ in range(repeats):
        for name, method in METHODS.items():
            wall, cpu = time.perf_counter(), time.process_time()
            indices, frames = method(path)
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
            right[name] = correct(indices, frames)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name]), right[name]) for name in METHODS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, nargs="+", default=[10, 60])
    parser.add_argument("--gops", type=int, nargs="+", default=[72, 250])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    targets = {10: 2.0, 60: 10.0}
    print(f"{NUM_FRAMES} frames per 1280x720 H.264 video (30 fps), median of {args.repeats}; "
          f"ratio = decode-all's time over the method's")
    for gop in args.gops:
        for seconds in args.seconds:
            path = video(seconds, gop)
            read_frames(str(path), NUM_FRAMES)  # warm the page cache and the imports
            results = measure(path, args.repeats)
            base_wall, base_cpu, _ = results["decode-all"]
            target = targets.get(seconds)
            print(f"\n{seconds:>3} s, GOP {gop} ({gop / 30:.1f} s)"
                  + (f"   target: ours >= {target:g}x decode-all" if target else ""))
            print(f"  {'':<14} {'videos/s':>8} {'wall ms':>9} {'ratio':>7} {'cpu ms':>9} {'ratio':>7}")
            for name, (wall, cpu, ok) in results.items():
                print(f"  {name:<14} {1 / wall:8.2f} {wall * 1000:9.1f} {base_wall / wall:6.2f}x {cpu * 1000:9.1f}"
                      f" {base_cpu / cpu:6.2f}x  {'exact' if ok else 'WRONG FRAMES'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
