"""`vidcap doctor`: one table, every check on its own, a broken package a row rather than a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidcap.doctor import check_deepspeed, check_flash_attn, check_gpus, check_torch, format_checks, run_checks

pytestmark = pytest.mark.timeout(300)


def test_the_table_names_gpus_torch_flash_attn_deepspeed_ops_and_slurm() -> None:
    checks = run_checks()
    names = [c.name.strip() for c in checks]
    for name in ("GPUs", "torch", "CUDA", "flash-attn", "DeepSpeed", "Slurm", "local workers"):
        assert name in names, names
    by_name = {c.name.strip(): c for c in checks}
    import torch

    assert by_name["torch"].status == "ok" and torch.__version__ in by_name["torch"].detail
    assert ("CUDA" in by_name["torch"].detail) == (torch.version.cuda is not None)
    table = format_checks(checks)
    assert table.splitlines()[0].split() == ["check", "status", "detail"]
    assert len(table.splitlines()) == len(checks) + 2


def test_this_cpu_machine_is_described_as_such() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU machine")
    assert check_torch()[1].detail.startswith("not available")
    gpus = check_gpus()[0]
    assert gpus.name == "GPUs" and ("none" in gpus.detail or "0 on this node" in gpus.detail)
    ops = [c for c in check_deepspeed() if c.name.strip().startswith("op ")]
    assert [c.name.strip() for c in ops] == ["op deepspeed_shm_comm"]  # the CPU accelerator's op for TP


def test_a_flash_attn_built_for_another_torch_is_a_warning_row(tmp_path: Path) -> None:
    """What a flash-attn wheel for another torch does at import: an ImportError naming an undefined symbol."""
    package = tmp_path / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ImportError('/x/flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        check = check_flash_attn()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("flash_attn", None)
    assert check.status == "warn" and check.detail.startswith("installed but broken: ") and "undefined symbol" in \
        check.detail


def test_doctor_command_prints_the_table_and_exits_by_warnings() -> None:
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", "/nonexistent"))
    out = subprocess.run([sys.executable, "-m", "vidcap", "doctor"], capture_output=True, text=True, timeout=240,
                         env=env)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["check", "status", "detail"], out.stdout
    warned = [ln for ln in lines[2:] if ln.split()[-2:-1] == ["warn"] or " warn " in ln]
    assert out.returncode == (1 if warned else 0), out.stdout
    assert "Traceback" not in out.stderr
