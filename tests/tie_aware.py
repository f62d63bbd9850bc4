"""The tie-aware comparison of two greedy generations, shared by the tensor-parallel and PLLaVA tests.

Random weights give near-tied logits, and batch composition or a split model moves them by ~1e-7: two greedy
runs may part ways at a genuine tie. A differing token is accepted only where the reference's top-2 gap is
below TIE_GAP, and every logit before it must agree within LOGIT_TOL (DeepSpeed's wrong split of Qwen2-VL's
fused vision qkv was off by 4e-3).
"""

from __future__ import annotations

import torch

TIE_GAP = 1e-5
LOGIT_TOL = 1e-4


def compare(ref_tokens: list[int], ref_logits: torch.Tensor, tokens: list[int], logits: torch.Tensor,
            eos: set[int], what: str) -> None:
    """Same tokens and logits until the end, or until a divergence at a genuine near-tie of the reference."""
    for step, (x, y) in enumerate(zip(ref_tokens, tokens)):
        drift = float((ref_logits[step] - logits[step]).abs().max())
        assert drift < LOGIT_TOL, f"{what}: logits at step {step} differ by {drift:.2e}"
        if x != y:
            top = ref_logits[step].topk(2).values
            gap = float(top[0] - top[1])
            assert gap < TIE_GAP, f"{what}: token {step} differs ({x} vs {y}) with a top-2 gap of {gap:.2e}"
            return
        if x in eos:
            return
