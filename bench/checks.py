"""Benchmark: caption checks, on a file of 10M captions and inside the worker.

1. `vidcap check-captions IN.csv --output OUT.csv` on N generated captions (default 10M; an Open-Sora-like CSV:
   path, text, num_frames, fps; ~6% of the captions broken in the ways the checks look for). Printed: rows/s,
   wall and CPU seconds, peak RSS of the command's process. Baseline in the same run: the same streaming
   read + write of the same file with no checks (vidcap.manifest.io, as check-captions uses it), so the
   ratio is what the checks cost on top of the I/O.
2. Per-caption cost in the worker against a tiny-model batch: vidcap's tiny LLaVA (vidcap.fixtures.tiny_models)
   generates a batch (4 videos x 3 frames, 32 new tokens, the worker's default batch); the caption task's
   `values` hook (where the checks run) then turns each answer into its row. Ratio: the hook's time for a
   batch / the model's time for that batch (target: under 1%).

Each side runs in its own subprocess; peak memory is read from /proc (VmHWM; ru_maxrss would carry over the
parent's peak through fork and exec) and sampled over the process and its workers together. The machine may be shared: the load average is
printed, and CPU seconds beside wall seconds (CPU time is what the checks cost; wall time includes waiting).

    .venv/bin/python bench/checks.py                    # 10M rows (several minutes)
    .venv/bin/python bench/checks.py --rows 200000      # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

SUBJECTS = ["A golden retriever", "A woman in a red coat", "Two children", "A chef", "An old man with a cane",
            "A black cat", "A cyclist", "A group of friends", "A surfer", "A street musician", "A drone",
            "A small boat", "A red sports car", "A ballet dancer", "A farmer", "A toddler", "A herd of goats",
            "A teenager on a skateboard", "A potter", "A firefighter"]
ACTIONS = ["runs along", "walks slowly across", "rides through", "dances in", "sits quietly in", "looks around",
           "crosses", "waits at the edge of", "plays near", "flies over", "drifts across", "cooks dinner in",
           "paints a mural in", "jumps over a puddle in", "laughs and points at something in"]
PLACES = ["a sandy beach at sunset", "a busy city intersection at night", "a misty pine forest",
          "a crowded market", "a quiet park in autumn", "a snowy mountain road", "a sunlit kitchen",
          "an empty train station", "a flooded rice field", "a neon-lit alley in the rain", "a wheat field",
          "a harbour at dawn", "a small village square", "a desert canyon", "a school playground"]
CAMERA = ["The camera tracks beside them at a low angle", "The shot is handheld and slightly shaky",
          "A static wide shot from a tripod", "The camera slowly pans from left to right",
          "Filmed as a time-lapse from above", "The view zooms in gradually",
          "A drone circles overhead as the scene unfolds"]
STYLE = ["Warm golden light and a shallow depth of field give it a cinematic look",
         "Cool blue tones and soft contrast, like an old film", "Bright, saturated colours in natural light",
         "Soft overcast light, muted colours, a calm mood", "High contrast black and white",
         "Grainy 16mm texture with warm highlights", "Shot in 4K at 60 fps with vivid colours"]
BROKEN = [  # (share, caption) in the ways the checks look for
    (0.015, "the the the the the the the the the the the the the the the the the the the the the the"),
    (0.015, "A man walks on the street. He is wearing a hat. He is wearing a hat. He is wearing a hat. "
            "He is wearing a hat. He is wearing a hat. He is wearing a hat. He is wearing a hat."),
    (0.01, ""),
    (0.01, "The image shows a bowl of fruit on a white table in a bright room with soft window light."),
    (0.005, "A cat."),
    (0.005, "ningPeople blueepdeBpsicing sleepsa callass dog<gh oTwving slowlyyleut ningPeople blueep"),
]


def make_captions(path: str, rows: int, seed: int = 0) -> int:
    """A CSV of `rows` captions, columnar (pyarrow joins), in 1M-row batches; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    pools = [pa.array(p) for p in (SUBJECTS, ACTIONS, PLACES, CAMERA, STYLE)]
    broken = pa.array([c for _, c in BROKEN])
    shares = np.cumsum([s for s, _ in BROKEN])
    step = 1_000_000
    schema = pa.schema([("path", pa.string()), ("text", pa.string()), ("num_frames", pa.string()),
                        ("fps", pa.string())])
    with pacsv.CSVWriter(path, schema) as writer:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            parts = [pc.take(pool, pa.array(rng.integers(0, len(pool), n))) for pool in pools]
            text = pc.binary_join_element_wise(
                pc.binary_join_element_wise(parts[0], parts[1], parts[2], " "), parts[3], parts[4], "", ". ")
            text = pc.utf8_rtrim_whitespace(text)
            draw = rng.random(n)
            which = np.searchsorted(shares, draw)
            bad = which < len(BROKEN)
            text = pc.if_else(pa.array(bad), pc.take(broken, pa.array(np.minimum(which, len(BROKEN) - 1))), text)
            ids = pa.array(np.arange(start, start + n)).cast(pa.string())
            writer.write_table(pa.table({
                "path": pc.binary_join_element_wise("/data/videos/", pc.utf8_lpad(ids, 9, "0"), ".mp4", ""),
                "text": text,
                "num_frames": pa.array(rng.integers(48, 2000, n)).cast(pa.string()),
                "fps": pa.array(rng.choice(["24", "25", "30", "60"], n)),
            }, schema=schema))
    return os.path.getsize(path)


class MemoryWatch:
    """Peak resident memory of this process (VmHWM: its own, not inherited over fork/exec as ru_maxrss is) and
    the peak of this process + its worker processes together, sampled every 0.2 s (psutil, from the test
    extra)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.me = psutil.Process()
        self.total_peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        import psutil

        while not self.stop.wait(0.2):
            total = self.me.memory_info().rss
            for p in self.me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.total_peak = max(self.total_peak, total)

    def finish(self) -> tuple[float, float]:
        self.stop.set()
        self.thread.join()
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return hwm / 1024, max(self.total_peak / 2**20, hwm / 1024)


def child(side: str, source: str, output: str, workers: int) -> None:
    """One measured side, in its own process: prints a JSON line with wall/CPU seconds, its peak RSS and the
    peak RSS of it and its worker processes together."""
    watch = MemoryWatch()
    started = time.perf_counter()
    if side == "checks":
        from vidcap.cli import main

        code = main(["check-captions", source, "--output", output, "--quiet", "--prompt", "video",
                     "--workers", str(workers)])
        assert code == 0
    else:  # baseline: the same streaming read and write, no checks
        from vidcap.manifest.io import TableWriter, iter_batches

        writer = None
        for batch in iter_batches(source):
            if writer is None:
                writer = TableWriter(output, batch.schema)
            writer.write(batch)
        writer.close()
    wall = time.perf_counter() - started
    me, workers_usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    peak, total = watch.finish()
    print(json.dumps({"wall_s": wall,
                      "cpu_s": me.ru_utime + me.ru_stime + workers_usage.ru_utime + workers_usage.ru_stime,
                      "peak_mb": peak, "total_peak_mb": total}))


def measure(side: str, source: str, output: str, workers: int = 1) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", side, source, output, str(workers)], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = out.stdout.strip().splitlines()
    if side == "checks":
        print("\n".join("    " + line for line in lines[:-1]))
    return json.loads(lines[-1])


def in_worker(batch_size: int = 4, repeat: int = 5) -> None:
    """The caption task's hook on a real tiny-model batch, against the batch's generation time."""
    import torch
    from transformers.utils import logging as hf_logging

    from vidcap.engines.base import Sample
    from vidcap.engines.hf import HFEngine
    from vidcap.engines.hf_settings import HFSettings
    from vidcap.prompts import PRESETS
    from vidcap.tasks.caption import CaptionSettings, CaptionTask
    from vidcap.fixtures.tiny_models import make_tiny_model

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    prompt = PRESETS["video"].text
    with tempfile.TemporaryDirectory() as folder:
        engine = HFEngine.loaded(HFSettings(model=str(make_tiny_model(f"{folder}/m", "llava")), max_new_tokens=32))
    rng = np.random.default_rng(0)
    samples = [Sample(str(i), [rng.integers(0, 256, (336, 448, 3), dtype=np.uint8) for _ in range(3)], prompt)
               for i in range(batch_size)]
    task = CaptionTask(CaptionSettings(prompt=prompt))
    engine.run(samples)  # warm-up
    model_s, hook_s = [], []
    for _ in range(repeat):
        started = time.process_time()
        results = engine.run(samples)
        model_s.append(time.process_time() - started)
        started = time.process_time()
        for _ in range(20):  # the hook is fast: time it 20 times over for a steady figure
            rows = [task.values(s, r) for s, r in zip(samples, results)]
        hook_s.append((time.process_time() - started) / 20)
    model, hook = min(model_s), min(hook_s)
    flags = sorted({f for row in rows for f in row["flags"]})
    print(f"in the worker: tiny LLaVA batch of {batch_size} (3 frames, 32 new tokens) {model * 1e3:.1f} ms CPU; "
          f"checks in the caption task's hook {hook * 1e3:.3f} ms per batch ({hook / batch_size * 1e6:.0f} us "
          f"per caption; flags raised: {', '.join(flags) or 'none'})")
    print(f"ratio: checks / model batch = {100 * hook / model:.3f}%  (target under 1%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", help="folder for the files (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="check-captions --workers (default: one per CPU)")
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "SOURCE", "OUTPUT", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, source, output, workers = args.child
        return child(side, source, output, int(workers))
    print(f"python {sys.version.split()[0]}, pyarrow {pa.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    in_worker()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        source = os.path.join(folder, "captions.csv")
        started = time.perf_counter()
        size = make_captions(source, args.rows)
        print(f"{args.rows} captions, {size / 1e9:.2f} GB CSV, made in {time.perf_counter() - started:.0f} s")
        base = measure("baseline", source, os.path.join(folder, "copy.csv"))
        ours = measure("checks", source, os.path.join(folder, "checked.csv"), args.workers)
    for name, r in (("read+write, no checks", base), (f"check-captions x{args.workers}", ours)):
        print(f"{name:<22} {args.rows / r['wall_s']:>10,.0f} rows/s  wall {r['wall_s']:7.1f} s  "
              f"CPU {r['cpu_s']:7.1f} s  peak RSS {r['peak_mb']:6.0f} MB (with its workers: "
              f"{r['total_peak_mb']:.0f} MB)")
    per_row = (ours["cpu_s"] - base["cpu_s"]) / args.rows
    print(f"checks add {per_row * 1e6:.1f} us CPU per caption; check-captions: {base['wall_s'] / ours['wall_s']:.3f}x "
          f"the rows/s and {ours['cpu_s'] / base['cpu_s']:.1f}x the CPU of a plain streaming copy  "
          f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
