"""Shared by the worker tests: small real videos and a manifest of them."""

from __future__ import annotations

import csv
from pathlib import Path

from vidcap.engines.base import Engine, Result, Sample
from vidcap.fixtures.synth import frame_signature, make_broken, make_video


def make_clips(folder: Path, count: int, broken: dict[int, str] | None = None) -> Path:
    """`count` tiny videos (seed = position) with some positions broken; returns a manifest CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    broken = broken or {}
    rows = []
    for i in range(count):
        name = f"clip_{i:03d}.mp4"
        if i in broken:
            make_broken(folder / name, broken[i])
        else:
            make_video(folder / name, seconds=0.5, fps=12, width=96, height=64, seed=i)
        rows.append({"path": name, "seed": str(i)})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "seed"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


class SignatureEngine(Engine):
    """Test double of an engine for the worker's bookkeeping: names the video its frames came from (the
    synthetic videos carry their seed in every frame), so a caption on the wrong row is caught."""

    name = "signature"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, samples):  # noqa: ANN001
        self.batches.append(len(samples))
        return [Result(text=f"seed {frame_signature(s.frames[0])[0]}", generated_tokens=2) for s in samples]
