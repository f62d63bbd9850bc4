"""What every task's command shares: run, shard, batch and executor flags, engine flags, and the flow
split -> check -> freeze -> submit -> wait -> merge. A task's command (`caption`, `tag`, `motion`) adds only
its own flags and a function that builds its `TaskSpec` from the arguments.

    def register(sub):
        p = sub.add_parser("tag", help="...")
        add_run_arguments(p, one_shot=True)
        add_engine_arguments(p, default="openai")
        p.add_argument("--text-column", default="text")
        p.set_defaults(func=lambda args: run_task(args, build_tag_spec))

    def build_tag_spec(args, manifest) -> TaskSpec: ...   # manifest: the pyarrow table, to check columns
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pyarrow loads in the handlers: every `vidcap` command imports this module
    import pyarrow as pa

from vidcap.errors import UserError
from vidcap.run import RunDir

SpecBuilder = Callable[[argparse.Namespace, "pa.Table"], Any]  # -> TaskSpec


def add_run_arguments(p: argparse.ArgumentParser, one_shot: bool, key_default: str = "path") -> None:
    """Manifest, run folder, shards, batches, retries and where it runs (local or Slurm).

    `one_shot`: the command waits and merges to --output (`caption`); else it only submits (`submit`).
    `key_default`: the column naming rows when --key is not given (a text task's input may have no path)."""
    p.add_argument("manifest", help="CSV or Parquet manifest (one row per item)")
    if one_shot:
        p.add_argument("--run", help="run folder (default: OUTPUT's name + .run)")
        p.add_argument("--output", "-o", required=True, help="OUT.csv or OUT.parquet")
        p.add_argument("--wait-timeout", type=float, default=None,
                       help="Slurm: give up waiting after this many seconds")
    else:
        p.add_argument("--run", required=True, help="run folder (created if new, continued if it exists)")
    g = p.add_argument_group("shards")
    g.add_argument("--shards", type=int, help="number of shards (array tasks)")
    g.add_argument("--rows-per-shard", type=int, help="rows per shard (default 1000 for a new run)")
    g.add_argument("--key", default=key_default, help=f"column naming each row uniquely (default: {key_default})")
    g.add_argument("--dedup", choices=["first"], help="keep the first of duplicate keys instead of refusing")
    g.add_argument("--data-root", default="", help="folder that relative paths start from (default: the manifest's)")
    g = p.add_argument_group("batches")
    g.add_argument("--batch-size", type=int, default=None,
                   help="rows per batch (default 4; openai: 4 x --concurrency so every slot stays busy)")
    g.add_argument("--max-attempts", type=int, default=3, help="a row that failed this often is not retried")
    g = p.add_argument_group("where it runs")
    g.add_argument("--executor", choices=["local", "slurm"], default="local")
    g.add_argument("--workers", type=int, default=None,
                   help="local: worker processes sharing the shards (default: visible GPUs / --tp-size, else 1)")
    g.add_argument("--force-config", action="store_true", help="continue the run with changed settings")
    from vidcap.commands.slurm_flags import add_slurm_arguments

    add_slurm_arguments(p)


def add_media_arguments(p: argparse.ArgumentParser, num_frames: int = 3, resize: int = 336) -> None:
    """Flags of the frames source: how many frames, what size, which decoder, how many readers."""
    g = p.add_argument_group("frames")
    g.add_argument("--num-frames", type=int, default=num_frames, help="frames per video (evenly spaced)")
    g.add_argument("--resize", type=int, default=resize, help="short side in pixels (0: keep)")
    g.add_argument("--backend", choices=["pyav", "decord"], default="pyav", help="video decoder")
    g.add_argument("--path-column", default="path", help="column naming each row's video or image file")
    g.add_argument("--readers", type=int, default=1, help="frame-reading processes (0: read in the worker)")
    g.add_argument("--ahead", type=int, default=16, help="videos read ahead of the model at most")


def add_engine_arguments(p: argparse.ArgumentParser, default: str = "hf") -> None:
    """Engine choice and every built-in engine's flags (each engine keeps only its own)."""
    from vidcap.engines.model_settings import ATTN_CHOICES, TP_BACKENDS

    g = p.add_argument_group("model")
    g.add_argument("--engine", default=default,
                   help="hf (Hugging Face model), pllava, openai (API), noop (no model)"
                        + ("; default: pllava for a PLLaVA checkpoint, else hf" if default is None else ""))
    g.add_argument("--model", default="", help="hub id or local folder (hf), model name (openai)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="default: bf16 on CUDA, fp32 on CPU")
    g.add_argument("--attn", choices=ATTN_CHOICES, help="attention implementation")
    g.add_argument("--device", help="cuda, cpu (default: cuda when present)")
    g.add_argument("--tp-size", type=int, default=1, help="tensor-parallel processes per shard task")
    g.add_argument("--tp-backend", choices=TP_BACKENDS, default="deepspeed")
    g.add_argument("--ds-kernel-inject", action="store_true",
                   help="DeepSpeed's fused kernels for the language model where it has them (CUDA, --tp-size 2+, "
                        "--tp-backend deepspeed); AutoTP otherwise")
    g.add_argument("--retry-repetition-penalty", type=float, metavar="P",
                   help="hf: generate a row's retries (e.g. captions flagged with --on-flag retry) with this "
                        "repetition penalty (e.g. 1.2); first attempts stay greedy")

    from vidcap.engines.pllava_cli import add_pllava_arguments

    add_pllava_arguments(p)
    g = p.add_argument_group("OpenAI-compatible API (--engine openai; key from OPENAI_API_KEY or --api-key-file)")
    g.add_argument("--api-base", help="base URL of an OpenAI-compatible server (default: OpenAI)")
    g.add_argument("--api-key-file", help="file holding the API key (never pass the key itself)")
    g.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    g.add_argument("--rpm", type=float, help="requests per minute at most")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    g.add_argument("--request-attempts", type=int, default=6,
                   help="tries per row on 429, 5xx, timeouts and dropped connections (then an error row)")
    g.add_argument("--image-detail", choices=["low", "high", "auto"], default="low")
    g.add_argument("--jpeg-quality", type=int, default=85)
    g.add_argument("--jpeg-max-side", type=int, default=768)
    g.add_argument("--prices-file", help="JSON prices per model (USD per 1M input/output tokens)")
    g.add_argument("--noop-latency", type=float, default=0.0, help=argparse.SUPPRESS)


def engine_settings_from_args(args: argparse.Namespace) -> Any:
    """The chosen engine's settings from the flags of `add_engine_arguments`."""
    if getattr(args, "ds_kernel_inject", False) and args.engine != "hf":
        raise UserError(f"--ds-kernel-inject applies to tensor-parallel runs through DeepSpeed of the hf engine "
                        f"(--engine hf --tp-size 2 or more), not to --engine {args.engine}")
    if args.engine == "hf":
        from vidcap.engines.hf_settings import HFSettings

        if not args.model:
            raise UserError("--model is required (a Hugging Face id such as llava-hf/llava-v1.6-mistral-7b-hf, "
                            "or a local folder; `vidcap make-tiny-model DIR` makes a tiny one for trials)")
        return HFSettings(model=args.model, max_new_tokens=args.max_new_tokens, dtype=args.dtype, attn=args.attn,
                          device=args.device, tp_size=args.tp_size, tp_backend=args.tp_backend,
                          ds_kernel_inject=args.ds_kernel_inject,
                          retry_repetition_penalty=getattr(args, "retry_repetition_penalty", None))
    if args.engine == "pllava":
        from vidcap.engines.pllava_cli import pllava_settings_from_args

        return pllava_settings_from_args(args)
    if args.engine == "openai":
        from vidcap.engines.openai_api import OpenAISettings

        if args.api_key_file and not Path(args.api_key_file).is_file():
            raise UserError(f"{args.api_key_file}: no such API key file")
        prices = {}
        if args.prices_file:
            from vidcap.engines.api_pricing import load_prices

            prices = load_prices(args.prices_file)
        return OpenAISettings(
            model=args.model, max_new_tokens=args.max_new_tokens, api_base=args.api_base,
            api_key_file=str(Path(args.api_key_file).absolute()) if args.api_key_file else None,
            concurrency=args.concurrency, requests_per_minute=args.rpm, request_timeout_s=args.request_timeout,
            max_request_attempts=args.request_attempts, image_detail=args.image_detail,
            jpeg_quality=args.jpeg_quality, jpeg_max_side=args.jpeg_max_side, prices=prices)
    if args.engine == "noop":
        from vidcap.engines.noop import NoopSettings

        return NoopSettings(latency_s=args.noop_latency)
    from vidcap.engines import engine_class

    return engine_class(args.engine).Settings()  # an engine without flags here: its defaults


def source_settings_from_args(args: argparse.Namespace, batch_size: int) -> Any:
    from vidcap.tasks.spec import SourceSettings

    return SourceSettings(
        data_root=str(Path(args.data_root).absolute()) if args.data_root else "",
        path_column=getattr(args, "path_column", "path"), backend=getattr(args, "backend", "pyav"),
        readers=getattr(args, "readers", 1), ahead=max(getattr(args, "ahead", 16), batch_size))


def default_batch_size(args: argparse.Namespace) -> int:
    if args.batch_size is None:
        return 4 * args.concurrency if args.engine == "openai" else 4
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    return args.batch_size


def prepare(args: argparse.Namespace, run: RunDir, build_spec: SpecBuilder) -> RunDir:
    """Split the manifest into the run (or check it matches), check the spec, and freeze it."""
    from vidcap.manifest.io import read_manifest
    from vidcap.manifest.split import split
    from vidcap.tasks.spec import freeze_spec

    table = read_manifest(args.manifest, key=args.key, dedup=args.dedup)
    spec = build_spec(args, table)
    task = spec.make_task()
    if task.reads_media and spec.source.path_column not in table.column_names:
        raise UserError(f"{args.manifest}: no {spec.source.path_column!r} column: the {task.name} task reads "
                        f"each row's video or image from it")
    spec.preflight()  # before anything is written: a typo must not freeze a run
    shards, per_shard = args.shards, args.rows_per_shard
    if shards is None and per_shard is None:
        if run.exists():
            shards = run.num_shards
        else:
            per_shard = 1000
    result = split(args.manifest, run, shards=shards, rows_per_shard=per_shard, key=args.key, dedup=args.dedup)
    freeze_spec(run, spec, force=args.force_config)
    sizes = result.shard_sizes
    print(f"{run.root}: {result.rows} rows in {len(sizes)} shards; {len(run.unfinished_shards())} unfinished")
    return run


def one_shot_run(args: argparse.Namespace) -> RunDir:
    output = Path(args.output)
    return RunDir.at(args.run or output.with_name(output.name.split(".")[0] + ".run"))


def run_task(args: argparse.Namespace, build_spec: SpecBuilder, done_word: str = "done") -> int:
    """The one-shot flow of a task's command: prepare, submit, wait, merge to --output, say what is left."""
    from vidcap.manifest.reduce_run import merge_run
    from vidcap.commands.slurm_flags import resource_request
    from vidcap.scheduler.submit import submit_unfinished, wait_for

    output = Path(args.output)
    run = prepare(args, one_shot_run(args), build_spec)
    submission = submit_unfinished(run, args.executor, resource_request(args), workers=args.workers)
    wait_for(run, submission, timeout_s=args.wait_timeout)
    counts = merge_run(run, output)
    print(f"{output}: {counts.rows} rows: {counts.ok} {done_word}, {counts.error} failed, "
          f"{counts.pending + counts.error} remaining (`vidcap remaining {run.root} -o FILE` lists them)")
    if counts.failures_by_reason:
        reasons = ", ".join(f"{r} x{n}" for r, n in sorted(counts.failures_by_reason.items(), key=lambda x: -x[1]))
        print(f"failures: {reasons}")
    return 0 if counts.pending == 0 else 1


def submit_task(args: argparse.Namespace, build_spec: SpecBuilder) -> int:
    """`submit`: prepare and submit, without waiting (or only prepare, for plain sbatch)."""
    from vidcap.commands.slurm_flags import resource_request
    from vidcap.scheduler.submit import submit_unfinished

    run = prepare(args, RunDir.at(args.run), build_spec)
    if getattr(args, "prepare_only", False):
        last = run.num_shards - 1
        print(f"prepared; to submit by hand: sbatch --array=0-{last} --output={run.logs_dir}/%A_%a.out "
              f"slurm/caption_array.sbatch {run.root}")
        return 0
    submission = submit_unfinished(run, args.executor, resource_request(args), workers=args.workers)
    return 0 if submission.ok else 1
