"""`vidcap submit`, `vidcap caption`, `vidcap run-shard`: from a manifest to captions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidcap.errors import UserError
from vidcap.run import RunDir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="split (if new), freeze the job, and run every unfinished shard")
    add_job_arguments(p)
    p.add_argument("--run", required=True, help="run folder (created if new, continued if it exists)")
    p.add_argument("--prepare-only", action="store_true",
                   help="split and freeze the job, submit nothing (for plain sbatch: slurm/caption_array.sbatch)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("caption", help="one shot: submit, wait, merge to --output, print what is left")
    add_job_arguments(p)
    p.add_argument("--run", help="run folder (default: OUTPUT's name + .run)")
    p.add_argument("--output", "-o", required=True, help="OUT.csv or OUT.parquet")
    p.add_argument("--wait-timeout", type=float, default=None, help="Slurm: give up waiting after this many seconds")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("run-shard", help="caption one shard of a run (what each array task runs)")
    p.add_argument("run", help="run folder")
    p.add_argument("index", type=int, help="shard index (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run_shard)


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="CSV or Parquet manifest with a `path` column")
    g = p.add_argument_group("shards")
    g.add_argument("--shards", type=int, help="number of shards (array tasks)")
    g.add_argument("--rows-per-shard", type=int, help="rows per shard (default 1000 for a new run)")
    g.add_argument("--key", default="path", help="column naming each row uniquely (default: path)")
    g.add_argument("--dedup", choices=["first"], help="keep the first of duplicate keys instead of refusing")
    g.add_argument("--data-root", default="", help="folder that relative paths start from (default: the manifest's)")

    g = p.add_argument_group("model and prompt")
    g.add_argument("--engine", default=None,
                   help="hf (Hugging Face VLM), pllava, openai (API), noop (no model); default: from --model")
    g.add_argument("--model", default="", help="hub id or local folder (hf), model name (openai)")
    g.add_argument("--prompt", default=None, help="preset name (video, image, image-3ex, ...)")
    g.add_argument("--prompt-file", default=None, help="file holding the prompt text")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="default: bf16 on CUDA, fp32 on CPU")
    g.add_argument("--attn", choices=["flash_attention_2", "sdpa", "eager"], help="attention implementation")
    g.add_argument("--device", help="cuda, cpu (default: cuda when present)")
    g.add_argument("--tp-size", type=int, default=1, help="tensor-parallel processes per shard task")
    g.add_argument("--tp-backend", choices=["deepspeed", "transformers"], default="deepspeed")

    from vidcap.engines.pllava_cli import add_pllava_arguments

    add_pllava_arguments(p)

    g = p.add_argument_group("frames and batches")
    g.add_argument("--num-frames", type=int, default=3, help="frames per video (evenly spaced)")
    g.add_argument("--resize", type=int, default=336, help="short side in pixels (0: keep)")
    g.add_argument("--backend", choices=["pyav", "decord"], default="pyav", help="video decoder")
    g.add_argument("--batch-size", type=int, default=None,
                   help="videos per batch (default 4; openai: 4 x --concurrency so every slot stays busy)")
    g.add_argument("--readers", type=int, default=1, help="frame-reading processes (0: read in the worker)")
    g.add_argument("--ahead", type=int, default=16, help="videos read ahead of the model at most")
    g.add_argument("--max-attempts", type=int, default=3, help="a row that failed this often is not retried")

    g = p.add_argument_group("OpenAI-compatible API (--engine openai; key from OPENAI_API_KEY or --api-key-file)")
    g.add_argument("--api-base", help="base URL of an OpenAI-compatible server (default: OpenAI)")
    g.add_argument("--api-key-file", help="file holding the API key (never pass the key itself)")
    g.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    g.add_argument("--rpm", type=float, help="requests per minute at most")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument("--request-attempts", type=int, default=6,
                   help="tries per video on 429, 5xx, timeouts and dropped connections (then an error row)")
    g.add_argument("--image-detail", choices=["low", "high", "auto"], default="low")
    g.add_argument("--jpeg-quality", type=int, default=85)
    g.add_argument("--jpeg-max-side", type=int, default=768)
    g.add_argument("--prices-file", help="JSON prices per model (USD per 1M input/output tokens)")
    g.add_argument("--noop-latency", type=float, default=0.0, help=argparse.SUPPRESS)

    g = p.add_argument_group("where it runs")
    g.add_argument("--executor", choices=["local", "slurm"], default="local")
    g.add_argument("--force-config", action="store_true", help="continue the run with changed settings")
    from vidcap.scheduler.slurm_args import add_slurm_arguments

    add_slurm_arguments(p)


def data_is_video(manifest_table, path_column: str) -> bool:
    """A run captions videos unless every sampled path names an image."""
    sample = manifest_table.column(path_column).slice(0, 50).to_pylist()
    return not all(str(p).lower().endswith(IMAGE_SUFFIXES) for p in sample)


def job_from_args(args: argparse.Namespace, is_video: bool):
    from vidcap.engines import EngineConfig
    from vidcap.jobconfig import JobConfig
    from vidcap.prompts import resolve_prompt

    if args.api_key_file and not Path(args.api_key_file).is_file():
        raise UserError(f"{args.api_key_file}: no such API key file")
    from vidcap.engines.pllava_cli import choose_engine, pllava_settings

    args.engine = choose_engine(args.engine, args.model)
    prompt = resolve_prompt(args.prompt, args.prompt_file, is_video=is_video)
    prices = {}
    if args.prices_file:
        from vidcap.engines.api_pricing import load_prices

        prices = load_prices(args.prices_file)
    if args.engine in ("hf", "pllava") and not args.model:
        raise UserError("--model is required (a Hugging Face id such as llava-hf/llava-v1.6-mistral-7b-hf, "
                        "or a local folder; `vidcap make-tiny-model DIR` makes a tiny one for trials)")
    engine = EngineConfig(
        engine=args.engine, model=args.model, prompt_name=prompt.name, prompt=prompt.text,
        num_frames=args.num_frames, max_new_tokens=args.max_new_tokens, dtype=args.dtype, attn=args.attn,
        device=args.device, tp_size=args.tp_size, tp_backend=args.tp_backend, api_base=args.api_base,
        api_key_file=str(Path(args.api_key_file).absolute()) if args.api_key_file else None,
        concurrency=args.concurrency, requests_per_minute=args.rpm, request_timeout_s=args.request_timeout,
        max_request_attempts=args.request_attempts,
        image_detail=args.image_detail, jpeg_quality=args.jpeg_quality, jpeg_max_side=args.jpeg_max_side,
        prices=prices, noop_latency_s=args.noop_latency, **pllava_settings(args),
    )
    if args.num_frames < 1:
        raise UserError("--num-frames must be at least 1")
    if args.batch_size is None:
        args.batch_size = 4 * args.concurrency if args.engine == "openai" else 4
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    return JobConfig(
        engine=engine, num_frames=args.num_frames, resize=args.resize or None, backend=args.backend,
        batch_size=args.batch_size, readers=args.readers, ahead=max(args.ahead, args.batch_size),
        max_attempts=args.max_attempts, is_video=is_video, data_root=str(Path(args.data_root).absolute()) if args.data_root else "",
    )


def prepare(args: argparse.Namespace, run: RunDir) -> RunDir:
    """Split the manifest into the run (or check it matches) and freeze the job config."""
    from vidcap.jobconfig import freeze_job
    from vidcap.manifest.io import read_manifest
    from vidcap.manifest.split import split

    shards, per_shard = args.shards, args.rows_per_shard
    if shards is None and per_shard is None:
        if run.exists():
            shards = run.num_shards
        else:
            per_shard = 1000
    result = split(args.manifest, run, shards=shards, rows_per_shard=per_shard, key=args.key, dedup=args.dedup)
    table = read_manifest(args.manifest, key=args.key, dedup=args.dedup)
    if "path" not in table.column_names:
        raise UserError(f"{args.manifest}: no 'path' column: vidcap reads each video from the 'path' column")
    job = job_from_args(args, is_video=data_is_video(table, "path"))
    freeze_job(run, job, force=args.force_config)
    sizes = result.shard_sizes
    print(f"{run.root}: {result.rows} rows in {len(sizes)} shards; {len(run.unfinished_shards())} unfinished")
    return run


def cmd_submit(args: argparse.Namespace) -> int:
    from vidcap.scheduler.submit import submit_unfinished

    run = prepare(args, RunDir.at(args.run))
    if args.prepare_only:
        last = run.num_shards - 1
        print(f"prepared; to submit by hand: sbatch --array=0-{last} --output={run.logs_dir}/%A_%a.out "
              f"slurm/caption_array.sbatch {run.root}")
        return 0
    submission = submit_unfinished(run, args)
    return 0 if submission.ok else 1


def cmd_caption(args: argparse.Namespace) -> int:
    from vidcap.manifest.reduce_run import merge_run
    from vidcap.scheduler.submit import submit_unfinished, wait_for

    output = Path(args.output)
    run = prepare(args, RunDir.at(args.run or output.with_name(output.name.split(".")[0] + ".run")))
    submission = submit_unfinished(run, args)
    wait_for(run, submission, timeout_s=args.wait_timeout)
    counts = merge_run(run, output)
    print(f"{output}: {counts.rows} rows: {counts.ok} captioned, {counts.error} failed, "
          f"{counts.pending + counts.error} remaining (`vidcap remaining {run.root} -o FILE` lists them)")
    if counts.failures_by_reason:
        reasons = ", ".join(f"{r} x{n}" for r, n in sorted(counts.failures_by_reason.items(), key=lambda x: -x[1]))
        print(f"failures: {reasons}")
    return 0 if counts.pending == 0 else 1


def cmd_run_shard(args: argparse.Namespace) -> int:
    from vidcap.worker import run_shard

    run = RunDir.at(args.run)
    if not 0 <= args.index < run.num_shards:
        raise UserError(f"{run.root}: no shard {args.index} (shards are 0..{run.num_shards - 1})")
    from vidcap.jobconfig import load_job

    if load_job(run).engine.tp_size > 1:  # N ranks on this machine, watched (vidcap.parallel)
        from vidcap.parallel import run_shards_local

        outcome = run_shards_local(run, [args.index], progress=not args.no_progress)[0]
    else:
        outcome = run_shard(run, args.index, progress=not args.no_progress)
    s = outcome.stats
    state = "done" if outcome.finished else "stopped early (a rerun continues)"
    print(f"shard {args.index}: {state}: {s.get('rows_ok', 0)} ok, {s.get('rows_error', 0)} error, "
          f"{s.get('videos_per_s', 0):.2f} videos/s", file=sys.stderr)
    return 0 if outcome.finished else 143
