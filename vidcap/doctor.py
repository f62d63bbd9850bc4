"""`vidcap doctor`: is this machine ready to caption? One table: GPUs, torch and CUDA, flash-attn, DeepSpeed
and its ops, Slurm, and how many local workers a run would start.

Every check runs on its own and says what it found, never raises: a broken package (flash-attn built for
another torch fails at import with an undefined symbol) is a row of the table, not a traceback. Nothing is
compiled or downloaded; a DeepSpeed op that would be built at first use (JIT) says so.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

OK, WARN, MISSING, INFO = "ok", "warn", "missing", "info"
#: DeepSpeed ops vidcap uses: kernel injection (--ds-kernel-inject) on CUDA, the shared-memory all-reduce of
#: tensor parallelism on the CPU; the others shown when the accelerator has them
DS_OPS = ("transformer_inference", "inference_core_ops", "deepspeed_shm_comm")


@dataclass
class Check:
    name: str
    status: str
    detail: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_gpus() -> list[Check]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return [Check("GPUs", INFO, "none (no nvidia-smi): CPU only")]
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("GPUs", WARN, f"nvidia-smi failed: {_first_line(exc)}")]
    if out.returncode != 0:
        return [Check("GPUs", WARN, f"nvidia-smi: {(out.stderr or out.stdout).strip()[:160]}")]
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    checks = [Check("GPUs", OK if lines else WARN, f"{len(lines)} on this node"
                    + (f"; CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""))]
    checks += [Check(f"  GPU {ln.split(',')[0]}", INFO, ",".join(ln.split(",")[1:]).strip()) for ln in lines]
    return checks


def check_torch() -> list[Check]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return [Check("torch", MISSING, f"not importable: {_first_line(exc)} (pip install vidcap[models])")]
    cuda = torch.version.cuda
    checks = [Check("torch", OK, f"{torch.__version__}, built for " + (f"CUDA {cuda}" if cuda else "CPU only"))]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        bf16 = torch.cuda.is_bf16_supported()
        checks.append(Check("CUDA", OK, f"available: {count} device(s) visible to torch, "
                                        f"{torch.cuda.get_device_name(0)}, bf16 {'yes' if bf16 else 'no'}"))
    elif shutil.which("nvidia-smi") and not cuda:
        checks.append(Check("CUDA", WARN, "this node has NVIDIA GPUs but torch is a CPU build: install the CUDA "
                                          "build that matches the driver (see README, 'On GPU nodes')"))
    else:
        checks.append(Check("CUDA", INFO, "not available: models run on the CPU"))
    return checks


def check_package(label: str, module: str, dist: str, hint: str) -> Check:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return Check(label, MISSING, f"not installed ({hint})")
    except Exception as exc:  # noqa: BLE001 - e.g. flash-attn built against another torch: undefined symbol
        return Check(label, WARN, f"installed but broken: {_first_line(exc)}")
    return Check(label, OK, _version(dist) or "installed")


def check_flash_attn() -> Check:
    check = check_package("flash-attn", "flash_attn", "flash-attn",
                          "optional, GPU only: pip install flash-attn --no-build-isolation")
    if check.status == OK:
        try:
            import torch

            if not torch.cuda.is_available():
                check = Check("flash-attn", WARN, f"{check.detail}, but CUDA is not available to use it")
        except Exception:  # noqa: BLE001
            pass
    return check


def check_deepspeed() -> list[Check]:
    # DeepSpeed's logger writes to the stdout of its import time: keep the table alone on stdout
    with contextlib.redirect_stdout(sys.stderr):
        check = check_package("DeepSpeed", "deepspeed", "deepspeed", "for --tp-size > 1 with --tp-backend deepspeed")
    if check.status != OK:
        return [check]
    checks = [check]
    try:
        import deepspeed.git_version_info as info
        from deepspeed.accelerator import get_accelerator
        from deepspeed.ops.op_builder.all_ops import ALL_OPS

        accelerator = get_accelerator().device_name()
        checks[0].detail += f" (accelerator: {accelerator})"
        installed = getattr(info, "installed_ops", {})
        for name in DS_OPS:
            builder = ALL_OPS.get(name)
            if builder is None:
                continue
            if installed.get(name):
                checks.append(Check(f"  op {name}", OK, "prebuilt"))
            elif _jit_built(builder):
                checks.append(Check(f"  op {name}", OK, "built at first use (JIT cache)"))
            elif builder.is_compatible(verbose=False):
                checks.append(Check(f"  op {name}", INFO, "compatible: compiled at first use (~1 min; needs a "
                                                          "compiler and, on GPUs, nvcc)"))
            else:
                checks.append(Check(f"  op {name}", WARN, "not compatible with this machine"))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("  ops", WARN, f"cannot list DeepSpeed ops: {_first_line(exc)}"))
    return checks


def _jit_built(builder) -> bool:  # noqa: ANN001 - a DeepSpeed OpBuilder
    try:
        from torch.utils.cpp_extension import _get_build_directory

        folder = _get_build_directory(builder.name, verbose=False)
    except Exception:  # noqa: BLE001
        return False
    return any(f.endswith(".so") for f in os.listdir(folder)) if os.path.isdir(folder) else False


def check_slurm() -> list[Check]:
    sinfo = shutil.which("sinfo")
    if not sinfo:
        return [Check("Slurm", INFO, "not installed here: --executor local only")]
    try:
        out = subprocess.run([sinfo, "-h", "-o", "%P %a %D %T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return [Check("Slurm", WARN, "sinfo did not answer within 15 s (controller unreachable?)")]
    if out.returncode != 0:
        return [Check("Slurm", WARN, f"sinfo failed: {(out.stderr or out.stdout).strip()[:160]}")]
    parts = sorted({" ".join(ln.split()[:2]) for ln in out.stdout.splitlines() if ln.strip()})
    checks = [Check("Slurm", OK, f"controller reachable; partitions: {', '.join(parts) or 'none'}")]
    sacct = shutil.which("sacct")
    if sacct:
        try:
            acc = subprocess.run([sacct, "-n", "-X", "-S", "now-1minutes", "-o", "JobID"], capture_output=True,
                                 text=True, timeout=15)
            checks.append(Check("  sacct", OK if acc.returncode == 0 else INFO,
                                "answers" if acc.returncode == 0 else "no accounting (status uses squeue only)"))
        except subprocess.TimeoutExpired:
            checks.append(Check("  sacct", WARN, "did not answer within 15 s"))
    if os.environ.get("SLURM_JOB_ID"):
        checks.append(Check("  allocation", INFO, f"inside job {os.environ['SLURM_JOB_ID']} on "
                                                  f"{os.environ.get('SLURMD_NODENAME', '?')}"))
    return checks


def check_workers() -> Check:
    from vidcap.scheduler.workers import plan_workers, visible_gpus

    gpus = visible_gpus()
    n = len(plan_workers(None, 1, gpus))
    return Check("local workers", INFO, f"default --workers {n} at --tp-size 1 "
                                        f"({len(gpus)} visible GPU(s); without GPUs: 1)")


def run_checks() -> list[Check]:
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: Check("python", INFO, sys.version.split()[0] + f" ({sys.executable})"),
        lambda: check_package("vidcap", "vidcap", "vidcap", ""),
        check_gpus, check_torch,
        lambda: check_package("transformers", "transformers", "transformers", "pip install vidcap[models]"),
        check_flash_attn, check_deepspeed,
        lambda: check_package("PyAV", "av", "av", "pip install av"),
        lambda: check_package("decord", "decord", "decord", "optional: pip install vidcap[decord]"),
        lambda: check_package("openai", "openai", "openai", "for --engine openai: pip install vidcap[api]"),
        check_slurm, check_workers,
    ]
    checks: list[Check] = []
    for step in steps:
        try:
            found = step()
        except Exception as exc:  # noqa: BLE001 - a check must not stop the others
            found = Check(getattr(step, "__name__", "check"), WARN, f"check failed: {_first_line(exc)}")
        checks += found if isinstance(found, list) else [found]
    return checks


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  {'status':<7}  detail", f"{'-' * width}  {'-' * 7}  {'-' * 40}"]
    lines += [f"{c.name:<{width}}  {c.status:<7}  {c.detail}" for c in checks]
    return "\n".join(lines)
