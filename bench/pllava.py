"""Benchmark: per-video cost of PLLaVA's path (tower -> projector -> 3-D pooling, LoRA'd language model)
against plain tiny LLaVA (the hf engine, the same K frames as K images), on CPU, same widths.

Both tiny models are 64 wide with the same CLIP tower (32 px, 16 patches per frame). Every answer is forced to
the same length (min_new_tokens = max_new_tokens) so generation lengths are equal. Printed: seconds per video
for plain LLaVA, PLLaVA with its adapter (as loaded), PLLaVA with the LoRA merged into the weights (what
tensor parallelism runs), visual tokens per video of each, and the ratios to plain LLaVA. On GPU at full size
these ratios would differ (the 13B language model dominates); this measures the machinery's overhead.

    .venv/bin/python bench/pllava.py [--videos 16] [--frames 4] [--batch-size 4] [--new-tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vidcap.engines.base import Sample  # noqa: E402
from vidcap.engines.hf import HFEngine  # noqa: E402
from vidcap.engines.hf_settings import HFSettings  # noqa: E402
from vidcap.engines.pllava import PllavaEngine  # noqa: E402
from vidcap.engines.pllava_settings import PllavaSettings  # noqa: E402
from vidcap.fixtures.tiny_models import make_tiny_model  # noqa: E402


def videos(count: int, frames: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [Sample(f"v{i}", [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(frames)],
                   "Describe this video.") for i in range(count)]


def per_video(engine, samples: list[Sample], batch: int, repeats: int) -> float:  # noqa: ANN001
    """Median over repeats of wall seconds per video for captioning every sample in batches."""
    engine.run(samples[:batch])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(samples), batch):
            results = engine.run(samples[i:i + batch])
            assert all(r.ok for r in results), [r.error for r in results]
        times.append((time.perf_counter() - start) / len(samples))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-pllava-"))
    samples = videos(args.videos, args.frames)

    llava = HFEngine.loaded(HFSettings(model=str(make_tiny_model(work / "llava", "llava")),
                                       max_new_tokens=args.new_tokens, device="cpu"))
    llava.generation.min_new_tokens = args.new_tokens
    pllava_dir = make_tiny_model(work / "pllava", "pllava")
    pllava = PllavaEngine.loaded(PllavaSettings(model=str(pllava_dir), max_new_tokens=args.new_tokens,
                                                pooling_shape=[args.frames, 2, 2], device="cpu"))
    pllava.num_frames = args.frames
    pllava.generation.min_new_tokens = args.new_tokens

    llava_tokens = int(llava.run(samples[:1])[0].prompt_tokens)
    plain = per_video(llava, samples, args.batch_size, args.repeats)
    adapter = per_video(pllava, samples, args.batch_size, args.repeats)
    pllava.model.merge_lora()
    merged = per_video(pllava, samples, args.batch_size, args.repeats)
    print(f"{args.videos} videos x {args.frames} frames, batch {args.batch_size}, {args.new_tokens} new tokens, "
          f"1 thread, median of {args.repeats}")
    print(f"plain tiny LLaVA (hf)      {plain * 1000:8.2f} ms/video  prompt {llava_tokens} tokens "
          f"({args.frames} x 16 image tokens)")
    print(f"PLLaVA, LoRA adapter       {adapter * 1000:8.2f} ms/video  {pllava.model.tokens_per_video} pooled video "
          f"tokens (pooling {args.frames}-2-2)   ratio {adapter / plain:.2f}x")
    print(f"PLLaVA, LoRA merged        {merged * 1000:8.2f} ms/video                              "
          f"ratio {merged / plain:.2f}x  (adapter/merged {adapter / merged:.2f}x)")


if __name__ == "__main__":
    main()
