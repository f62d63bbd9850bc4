"""PLLaVA under tensor parallelism (`--tp-size 2`, DeepSpeed AutoTP over the language model) on CPU with gloo:
the same tokens and logits as one process with the unmerged adapter, the language model really split.

128 wide: DeepSpeed shards in blocks of 64. The first run JIT-compiles DeepSpeed's shared-memory op into
TORCH_EXTENSIONS_DIR (shared with test_tensor_parallel).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from pllava_helpers import fixed_batch, greedy  # noqa: E402
from tie_aware import compare  # noqa: E402
from vidcap.engines.pllava import PllavaEngine  # noqa: E402
from vidcap.engines.pllava_settings import PllavaSettings  # noqa: E402
from vidcap.parallel.launch import start_ranks, supervise  # noqa: E402
from vidcap.fixtures.tiny_models import make_tiny_model  # noqa: E402

WIDTH = 128
TESTS = Path(__file__).resolve().parent
pytest.importorskip("deepspeed")


@pytest.fixture
def ranks_env(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{path}" if path else str(TESTS))


@pytest.mark.timeout(600)
def test_tp2_gives_the_tokens_of_tp1(tmp_path: Path, ranks_env: None) -> None:
    torch.set_num_threads(1)
    model = make_tiny_model(tmp_path / "tiny", family="pllava", width=WIDTH)
    out = tmp_path / "tp2.pt"
    supervise(start_ranks([str(out), str(model)], 2, tmp_path, module="pllava_tp_ranks", follower_argv=()),
              tmp_path, timeout_s=500)  # ~6 min on this shared 2-core machine, mostly imports
    got = torch.load(out)
    assert got["shapes"]["language_q"][0] == WIDTH // 2, got["shapes"]  # the language model is split
    assert got["shapes"]["vision_q"] == [WIDTH // 2, WIDTH // 2], got["shapes"]  # the tower is whole
    ref = PllavaEngine.loaded(PllavaSettings(model=str(model), max_new_tokens=12, device="cpu"))
    ref_tokens, ref_logits = greedy(ref, fixed_batch())
    assert got["logits"].shape == ref_logits.shape
    for i in range(len(ref_tokens)):
        compare(ref_tokens[i], ref_logits[i], got["tokens"][i], got["logits"][i], ref.eos_ids, f"sample {i}")
