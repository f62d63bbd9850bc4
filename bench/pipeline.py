"""Benchmark: the shard worker with frame prefetch on vs off (tiny model + a fixed extra model latency).

Prints reading time alone, model time alone, the worker's wall time with prefetch off (reading and model
one after the other) and on (reading in a separate process while the model runs), videos/s of each and
the ratio. Target: with prefetch, wall within 10% of max(reading, model).

    .venv/bin/python bench/pipeline.py [--videos 48] [--batch-size 4] [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from vidcap.engines.base import Engine, Sample  # noqa: E402
from vidcap.engines.hf import HFEngine  # noqa: E402
from vidcap.engines.hf_settings import HFSettings  # noqa: E402
from vidcap.tasks.caption import CaptionSettings  # noqa: E402
from vidcap.tasks.spec import SourceSettings, TaskSpec, freeze_spec  # noqa: E402
from vidcap.manifest.split import split  # noqa: E402
from vidcap.prefetch import Prefetcher  # noqa: E402
from vidcap.run import RunDir  # noqa: E402
from vidcap.fixtures.synth import make_video  # noqa: E402
from vidcap.fixtures.tiny_models import make_tiny_model  # noqa: E402
from vidcap.worker import run_shard  # noqa: E402


class SlowerEngine(Engine):
    """The real tiny model plus a fixed latency per batch, standing in for a bigger model's compute."""

    def __init__(self, inner: Engine, latency_s: float) -> None:
        self.inner, self.latency_s = inner, latency_s

    def run(self, samples):  # noqa: ANN001
        time.sleep(self.latency_s)
        return self.inner.run(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each 640x360 video")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-pipeline-"))
    names = []
    for i in range(args.videos):
        make_video(work / f"v{i:03d}.mp4", seconds=args.seconds, fps=24, width=640, height=360, seed=i)
        names.append(f"v{i:03d}.mp4")
    (work / "m.csv").write_text("path\n" + "\n".join(names) + "\n")
    model = make_tiny_model(work / "tiny", family="llava")
    config = HFSettings(model=str(model), max_new_tokens=16)
    prompt = "Describe the video."
    inner = HFEngine.loaded(config)
    paths = [str(work / n) for n in names]

    started = time.perf_counter()
    with Prefetcher(paths, 3, resize=336, workers=0) as reader:
        items = list(reader)
    reading = time.perf_counter() - started
    batches = [items[i: i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    samples = [[Sample(it.path, it.frames.frames, prompt) for it in b] for b in batches]
    started = time.perf_counter()
    for batch in samples:
        inner.run(batch)
    bare_model = time.perf_counter() - started
    # add latency so the model takes as long as reading: the case where overlap matters most
    latency = max(0.0, (reading - bare_model) / len(batches))
    engine = SlowerEngine(inner, latency)
    model_time = bare_model + latency * len(batches)

    walls = {}
    for readers in (0, 1):
        run = RunDir.at(work / f"run-{readers}")
        split(work / "m.csv", run, shards=1)
        freeze_spec(run, TaskSpec(task="caption", settings=CaptionSettings(prompt=prompt, num_frames=3, resize=336),
                                  engine="hf", engine_settings=config, batch_size=args.batch_size,
                                  source=SourceSettings(readers=readers, ahead=4 * args.batch_size)))
        started = time.perf_counter()
        outcome = run_shard(run, 0, engine=engine, progress=False)
        walls[readers] = time.perf_counter() - started
        assert outcome.finished and outcome.stats["rows_ok"] == args.videos

    n = args.videos
    ideal = max(reading, model_time)
    print(f"videos: {n} x {args.seconds:.0f} s 640x360 H.264, 3 frames each, batch {args.batch_size}, "
          f"tiny model + {latency * 1000:.0f} ms/batch")
    print(f"reading alone          {reading:7.2f} s  {n / reading:6.1f} videos/s")
    print(f"model alone            {model_time:7.2f} s  {n / model_time:6.1f} videos/s")
    print(f"worker, prefetch off   {walls[0]:7.2f} s  {n / walls[0]:6.1f} videos/s   (sum would be {reading + model_time:.2f} s)")
    print(f"worker, prefetch on    {walls[1]:7.2f} s  {n / walls[1]:6.1f} videos/s")
    print(f"speed-up on/off        {walls[0] / walls[1]:.2f}x")
    print(f"prefetch-on wall / max(reading, model) = {walls[1] / ideal:.3f}  "
          f"(target <= 1.10: {'met' if walls[1] <= 1.10 * ideal else 'missed'})")


if __name__ == "__main__":
    main()
