"""`make demo`: sample videos, a tiny random model, and the whole pipeline end to end on this machine.

The tiny model has random weights: its captions are noise. What the demo shows is the machinery —
split, prefetch, batches, durable results, merge, the remaining set with reasons, throughput — and the
commands that run the same job with real weights or on Slurm.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vidcap.cli import main as vidcap
from vidcap.run import RunDir

GOOD_VIDEOS = 18


def make_samples(folder: Path) -> Path:
    """~20 short videos (varied sizes, a variable-frame-rate one, a rotated one), two broken; a manifest."""
    from vidcap.synth import make_broken, make_video

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(GOOD_VIDEOS):
        name = f"clip_{i:02d}.mp4"
        if not (folder / name).exists():
            make_video(folder / name, seconds=1.0 + (i % 4) * 0.5, fps=24, width=320 if i % 3 else 426,
                       height=240, seed=i, vfr=(i == 5), rotate=90 if i == 7 else None)
        rows.append({"path": name, "source": "synthetic", "seed": str(i)})
    for name, kind in (("broken_truncated.mp4", "truncated"), ("broken_not_a_video.mp4", "text")):
        if not (folder / name).exists():
            make_broken(folder / name, kind)
        rows.append({"path": name, "source": f"broken on purpose ({kind})", "seed": ""})
    manifest = folder / "videos.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "source", "seed"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def run_demo(folder: Path) -> int:
    from vidcap.tiny_models import make_tiny_model

    folder = folder.absolute()
    manifest = make_samples(folder / "videos")
    model = folder / "tiny-llava"
    if not (model / "config.json").exists():
        make_tiny_model(model, family="llava")
    output = folder / "captions.csv"
    run = folder / "run"
    print(f"\n== captioning {manifest} with the tiny model (local executor)")
    code = vidcap(["caption", str(manifest), "--run", str(run), "--output", str(output), "--model", str(model),
                   "--shards", "4", "--batch-size", "4", "--num-frames", "3", "--max-new-tokens", "24",
                   "--executor", "local"])
    if code not in (0, 1):
        return code
    remaining = folder / "remaining.csv"
    print("\n== what is left to do")
    vidcap(["remaining", str(run), "--output", str(remaining)])
    with open(output, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["status"] != "ok":
                print(f"  {row['path']}: {row['error']}")
    stats = [RunDir.at(run).read_stats(i) for i in range(RunDir.at(run).num_shards)]
    rows = sum(s.get("rows_ok", 0) + s.get("rows_error", 0) for s in stats if s)
    seconds = sum(s.get("seconds", 0.0) for s in stats if s)
    print(f"\n== throughput: {rows} videos in {seconds:.1f} s of shard work = {rows / max(seconds, 1e-9):.1f} videos/s")
    with open(output, encoding="utf-8") as f:
        first = next(r for r in csv.DictReader(f) if r["status"] == "ok")
    print(f"   e.g. {first['path']}: {json.dumps(first['text'][:80])}  (random weights: noise, by design)")
    print(f"""
== the same job for real
  with real weights (on a GPU machine):
    vidcap caption {manifest} --output captions.csv --model llava-hf/llava-v1.6-mistral-7b-hf
  on Slurm, one array task per shard (see slurm/profiles/example.toml):
    make submit MANIFEST=data.csv MODEL=llava-hf/llava-v1.6-mistral-7b-hf PROFILE=slurm/profiles/example.toml
    vidcap status runs/data      # table of shards, rows, throughput, ETA
    vidcap resume runs/data      # resubmits only what is unfinished
""")
    return 0
