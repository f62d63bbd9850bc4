"""--ds-kernel-inject: which language models DeepSpeed has fused kernels for, and a clear refusal elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidcap.cli import main
from vidcap.engines.hf_settings import HFSettings
from vidcap.engines.hf_load import load_model
from vidcap.errors import UserError
from vidcap.fixtures.tiny_models import make_tiny_model
from worker_helpers import make_clips

pytest.importorskip("deepspeed")
from vidcap.parallel.load import kernel_inject_layers, language_only_policy, use_kernel_inject  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("family, layers", [("llava", ["LlamaDecoderLayer"]), ("qwen2-vl", [])])
def test_kernel_layers_are_found_for_llama_language_models_only(tmp_path: Path, family: str,
                                                                layers: list[str]) -> None:
    model = load_model(HFSettings(model=str(make_tiny_model(tmp_path / family, family=family)), device="cpu"))
    assert kernel_inject_layers(model) == layers


def test_kernel_injection_is_refused_on_the_cpu_and_falls_back_where_unsupported(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    llava = load_model(HFSettings(model=str(make_tiny_model(tmp_path / "l", family="llava")), device="cpu"))
    with pytest.raises(UserError, match="--ds-kernel-inject needs CUDA GPUs"):
        use_kernel_inject(llava, torch.device("cpu"), None, leader=True)
    # the decision past the device check, as on a GPU node: Llama yes; Qwen2-VL (own policy) no, said once
    qwen = load_model(HFSettings(model=str(make_tiny_model(tmp_path / "q", family="qwen2-vl")), device="cpu"))
    assert use_kernel_inject(llava, torch.device("cuda", 0), None, leader=True) is True
    assert use_kernel_inject(qwen, torch.device("cuda", 0), language_only_policy(qwen), leader=True) is False
    assert "needs its own tensor-parallel policy; using AutoTP" in capsys.readouterr().err


def test_the_flag_without_deepspeed_tensor_parallel_is_refused(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    manifest = make_clips(tmp_path / "v", 1)
    code = main(["submit", str(manifest), "--run", str(tmp_path / "run"), "--engine", "noop", "--ds-kernel-inject",
                 "--prepare-only"])
    assert code == 2 and "--ds-kernel-inject applies to tensor-parallel runs" in capsys.readouterr().err
