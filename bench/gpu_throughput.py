"""Benchmark: captioning throughput on GPUs, with no download: LLaVA-NeXT with a 7B Mistral-shaped language
model and a CLIP ViT-L/14-336 tower, random weights built from a config, bf16.

It captions synthetic 3-frame videos at short side 336 with a fixed caption length (min_new_tokens =
max_new_tokens, since random weights never stop), and prints for each way of running it: videos/s per GPU,
how busy the GPU was (utilization sampled while it ran, through pynvml or nvidia-smi) and peak memory.
* plain: a plain Hugging Face loop (read a batch's frames, process, generate, one after the other): the
  baseline.
* vidcap: vidcap's engine and shard worker with frames read ahead in a prefetch process.
* tp2 / tp2-kernels: with 2 GPUs or more, `--tp-size 2` through DeepSpeed (AutoTP; then
  --ds-kernel-inject), run by `vidcap run-shard` on the same model saved to disk.
Targets on a GPU: >= 8 videos/s per GPU for the 7B shape, the GPU busy >= 90%, >= 3x the plain loop.

On a machine without CUDA it runs a tiny version (a 64-wide model, a few videos, 8 tokens) in seconds:
proof that the script works, not a figure to quote.

    .venv/bin/python bench/gpu_throughput.py [--shape 7b|tiny] [--videos 256] [--batch-size 16]
        [--new-tokens 100] [--tp] [--skip-plain]
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
import threading
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

# the rest is imported in main(): the prefetch processes are spawned, and a spawned child imports this
# module again; at the top, torch and transformers would load once more in every frame reader

PROMPT = "These are frames of one video, in order. Describe the video in detail."
#: llava-hf/llava-v1.6-mistral-7b-hf's shapes
SHAPES: dict[str, dict[str, Any]] = {
    "7b": {"text": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "vocab_size": 32064},
           "vision": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                      "projection_dim": 768},
           "pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], "image": 336, "patch": 14},
    "tiny": {"text": {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                      "vocab_size": 512},
             "vision": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                        "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                        "projection_dim": 32},
             "pinpoints": [[32, 64], [64, 32], [64, 64]], "image": 32, "patch": 8},
}


def build_model(shape: str, device: Any, dtype: Any, new_tokens: int) -> tuple[Any, Any]:
    """LLaVA-NeXT with random weights, made directly on `device` (a 7B model on the CPU first would take
    minutes), and its processor (a tokenizer trained on the spot: its ids cover what it decodes)."""
    import torch
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    from vidcap.fixtures.tiny_models import _LLAVA_TOKENS, _MISTRAL_TEMPLATE, train_tokenizer

    spec = SHAPES[shape]
    tokenizer = train_tokenizer(_LLAVA_TOKENS)
    text = dict(spec["text"], pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    side = spec["image"]
    config = LlavaNextConfig(vision_config=spec["vision"], text_config=text, image_token_index=tokenizer.image_token_id,
                             image_grid_pinpoints=spec["pinpoints"], image_seq_length=(side // spec["patch"]) ** 2,
                             vision_feature_select_strategy="default", vision_feature_layer=-2)
    config.vidcap_tiny_random = True
    image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=spec["pinpoints"],
                                                 size={"shortest_edge": side},
                                                 crop_size={"height": side, "width": side})
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   chat_template=_MISTRAL_TEMPLATE, patch_size=spec["patch"],
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    gen.min_new_tokens = gen.max_new_tokens = new_tokens  # random weights never stop: a fixed length
    return model, processor


class Busy:
    """GPU utilization sampled every 0.2 s while a phase runs (pynvml if present, else nvidia-smi)."""

    def __init__(self, gpus: int) -> None:
        self.gpus, self.samples, self._stop = gpus, [], threading.Event()
        self._query: Callable[[], list[float]] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)]
            self._query = lambda: [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
        except Exception:  # noqa: BLE001 - no pynvml: nvidia-smi, or nothing on a CPU machine
            if gpus and shutil.which("nvidia-smi"):
                self._query = _smi_utilization

    def __enter__(self) -> "Busy":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while self._query is not None and not self._stop.wait(0.2):
            try:
                values = self._query()[: self.gpus]
            except Exception:  # noqa: BLE001
                return
            if values:
                self.samples.append(sum(values) / len(values))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def figure(self) -> str:
        return f"{sum(self.samples) / len(self.samples):5.1f}%" if self.samples else "  n/a"


def _smi_utilization() -> list[float]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10).stdout
    return [float(x) for x in out.split()]


def peak_memory(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:6.1f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:6.2f} GiB (process RSS)"


def report(name: str, videos: int, seconds: float, gpus: int, busy: Busy, memory: str) -> float:
    rate = videos / seconds / max(gpus, 1)
    print(f"  {name:<12} {videos} videos in {seconds:7.2f} s = {rate:7.2f} videos/s per {'GPU' if gpus else 'CPU'}"
          f"  busy {busy.figure()}  peak {memory}", flush=True)
    return rate


def plain_loop(model: Any, processor: Any, paths: list[str], batch: int, frames: int, side: int,
               device: Any) -> None:
    """What a script without vidcap does: read a batch, process it, generate, next batch."""
    import torch

    from vidcap.engines.base import Sample
    from vidcap.engines.hf_inputs import build_inputs
    from vidcap.frames.read import read_frames

    for start in range(0, len(paths), batch):
        chunk = [read_frames(p, frames, resize=side).frames for p in paths[start:start + batch]]
        samples = [Sample(key=str(i), frames=f, prompt=PROMPT) for i, f in enumerate(chunk)]
        inputs = build_inputs(processor, samples).to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False)


def vidcap_run(work: Path, name: str, settings: Any, batch: int, frames: int, side: int) -> Any:
    from vidcap.manifest.split import split
    from vidcap.run import RunDir
    from vidcap.tasks.caption import CaptionSettings
    from vidcap.tasks.spec import SourceSettings, TaskSpec, freeze_spec

    run = RunDir.at(work / f"run-{name}")
    shutil.rmtree(run.root, ignore_errors=True)
    split(work / "m.csv", run, shards=1)
    freeze_spec(run, TaskSpec(task="caption", settings=CaptionSettings(prompt=PROMPT, num_frames=frames, resize=side),
                              engine="hf", engine_settings=settings, batch_size=batch,
                              source=SourceSettings(readers=2, ahead=4 * batch)))
    return run


def main() -> None:
    import torch

    import dataclasses

    from vidcap.engines.base import Sample
    from vidcap.engines.hf import HFEngine
    from vidcap.engines.hf_settings import HFSettings
    from vidcap.engines.hf_inputs import build_inputs
    from vidcap.frames.read import read_frames
    from vidcap.fixtures.synth import make_video
    from vidcap.worker import run_shard

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b" if cuda else "tiny")
    parser.add_argument("--videos", type=int, default=256 if cuda else 8)
    parser.add_argument("--batch-size", type=int, default=16 if cuda else 4)
    parser.add_argument("--new-tokens", type=int, default=100 if cuda else 8)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--side", type=int, default=336)
    parser.add_argument("--tp", action="store_true", default=cuda and torch.cuda.device_count() >= 2,
                        help="also --tp-size 2 through DeepSpeed, AutoTP and kernel injection (default with >= 2 "
                             "GPUs; on the CPU it runs gloo ranks)")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (videos, saved model)")
    args = parser.parse_args()

    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    gpus = 1 if cuda else 0
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-gpu-"))
    names = []
    for i in range(args.videos):
        make_video(work / f"v{i:04d}.mp4", seconds=1.0, fps=24, width=640, height=360, seed=i)
        names.append(f"v{i:04d}.mp4")
    (work / "m.csv").write_text("path\n" + "\n".join(names) + "\n")
    paths = [str(work / n) for n in names]
    started = time.perf_counter()
    model, processor = build_model(args.shape, device, dtype, args.new_tokens)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"LLaVA-NeXT {args.shape} ({params:.2f} B parameters, {dtype}) built on {device} in "
          f"{time.perf_counter() - started:.1f} s; {torch.cuda.get_device_name(0) if cuda else 'no GPU'}")
    print(f"{args.videos} videos x {args.frames} frames at short side {args.side}, batch {args.batch_size}, "
          f"{args.new_tokens} new tokens each (min = max)")
    warm = build_inputs(processor, [Sample("w", read_frames(paths[0], args.frames, resize=args.side).frames,
                                           PROMPT)])
    print(f"prompt: {warm['input_ids'].shape[1]} tokens per video (visual placeholders included)", flush=True)
    plain_loop(model, processor, paths[: min(2, len(paths))], 2, args.frames, args.side, device)  # warm-up

    rates: dict[str, float] = {}
    if not args.skip_plain:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with Busy(gpus) as busy:
            t = time.perf_counter()
            plain_loop(model, processor, paths, args.batch_size, args.frames, args.side, device)
            seconds = time.perf_counter() - t
        rates["plain"] = report("plain HF", args.videos, seconds, gpus, busy, peak_memory(device))

    settings = HFSettings(model=str(work / "model"), max_new_tokens=args.new_tokens, device=device.type,
                          dtype="bf16" if cuda else "fp32")
    engine = HFEngine(settings).attach(model, processor, device=device)
    run = vidcap_run(work, "vidcap", settings, args.batch_size, args.frames, args.side)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with Busy(gpus) as busy:
        t = time.perf_counter()
        outcome = run_shard(run, 0, engine=engine, progress=False)
        seconds = time.perf_counter() - t
    assert outcome.finished and outcome.stats["rows_ok"] == args.videos, outcome.stats
    print(f"  (vidcap: waited {outcome.stats['read_wait_s']:.2f} s for frames, {outcome.stats['model_s']:.2f} s in the "
          f"model, {seconds - outcome.stats['seconds']:.2f} s before the shard started)")
    rates["vidcap"] = report("vidcap", args.videos, seconds, gpus, busy, peak_memory(device))
    if "plain" in rates:
        print(f"  ratio vidcap / plain: {rates['vidcap'] / rates['plain']:.2f}x (target >= 3x on a GPU)")

    if args.tp:
        model.save_pretrained(work / "model")
        processor.save_pretrained(work / "model")
        del engine, model
        if cuda:
            torch.cuda.empty_cache()
        tp_gpus = 2 if cuda else 0
        for name, inject in (("tp2", False), ("tp2-kernels", True)):
            if inject and not cuda:
                continue  # DeepSpeed's kernels are CUDA's
            config = dataclasses.replace(settings, tp_size=2, ds_kernel_inject=inject)
            tp_run = vidcap_run(work, name, config, args.batch_size, args.frames, args.side)
            env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1") if cuda else dict(os.environ)
            with Busy(tp_gpus) as busy:
                done = subprocess.run([sys.executable, "-m", "vidcap", "run-shard", str(tp_run.root), "0",
                                       "--no-progress"], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"  {name}: failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            stats = json.loads(tp_run.stats_path(0).read_text())  # the shard's time, model loading excluded
            rates[name] = report(name, args.videos, stats["seconds"], tp_gpus, busy, "(see nvidia-smi)")
    print("summary: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()) + " videos/s per device")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
