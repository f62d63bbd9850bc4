"""One rank of test_tensor_parallel's equivalence check: `python -m tp_ranks OUT BACKEND FAMILY=DIR...`.

Started by vidcap's own launcher (torchrun's variables). Each rank joins the process groups, loads each tiny
model through vidcap's tensor-parallel loader, and runs greedy generation on the same fixed batch with the
logits kept; rank 0 saves tokens, logits and the local shapes that show what was sharded.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from vidcap.engines.hf_settings import HFSettings
from vidcap.engines.base import Engine, Sample
from vidcap.engines.hf_inputs import build_inputs

MAX_NEW = 12
PROMPTS = ("Describe this video in detail.", "What happens here?")


def fixed_batch() -> list[Sample]:
    """Two videos of different sizes and prompt lengths, so left padding is exercised too."""
    out = []
    for i, (h, w) in enumerate([(48, 80), (40, 40)]):
        rng = np.random.default_rng(100 + i)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(3)]
        out.append(Sample(key=f"s{i}", frames=frames, prompt=PROMPTS[i]))
    return out


def greedy(engine, samples):  # noqa: ANN001, ANN201 - an HFEngine
    """New tokens (lists) and logits (batch, steps, vocab) from the engine's own inputs and settings."""
    inputs = build_inputs(engine.processor, samples).to(engine.device, dtype=engine.dtype)
    generation = copy.deepcopy(engine.generation)
    generation.output_logits = generation.return_dict_in_generate = True
    with torch.inference_mode():
        out = engine.model.generate(**inputs, generation_config=generation)
    tokens = out.sequences[:, inputs["input_ids"].shape[1]:].tolist()
    logits = torch.stack([x.full_tensor() if hasattr(x, "full_tensor") else x for x in out.logits], dim=1)
    return tokens, logits.float().cpu()


def local_shape(weight: torch.Tensor) -> list[int]:
    return list(weight.to_local().shape if hasattr(weight, "to_local") else weight.shape)


def shapes(model) -> dict[str, list[int]]:  # noqa: ANN001
    """Local shapes of a language q projection and of the vision tower's first attention input."""
    layer = model.model.language_model.layers[0]
    found = {"language_q": local_shape(layer.self_attn.q_proj.weight)}
    for name, module in model.named_modules():
        if ("vision_tower" in name or "visual" in name) and name.endswith(("attn.qkv", "self_attn.q_proj")):
            found["vision_attn"] = local_shape(module.weight)
            break
    return found


def main(argv: list[str]) -> None:
    from vidcap.parallel.env import Bounds, RankEnv
    from vidcap.parallel.load import init_groups, load_rank_engine, rank_device
    from vidcap.parallel.watchdog import set_rank_label

    out_path, backend, pairs = argv[0], argv[1], argv[2:]
    env = RankEnv.from_env()
    env.export()
    set_rank_label(env.rank, env.world_size)
    torch.set_num_threads(1)
    results = {}
    groups = None
    for pair in pairs:
        family, path = pair.split("=", 1)
        config = HFSettings(model=path, max_new_tokens=MAX_NEW, tp_size=env.world_size, tp_backend=backend,
                              device="cpu")
        device = rank_device(config, env)
        groups = groups or init_groups(env, device, Bounds.from_env())
        engine = load_rank_engine(config, env, device, groups)
        tokens, logits = greedy(engine, fixed_batch())
        results[family] = {"tokens": tokens, "logits": logits, "shapes": shapes(engine.model),
                           "hidden": engine.model.config.get_text_config().hidden_size}
    if env.rank == 0:
        torch.save(results, out_path)


class ScriptedEngine(Engine):
    """A stand-in model for the agreement check: rank 1 runs out of memory on batches of more than one, and
    says something else than rank 0 about a sample whose key starts with "odd", and fails on "bad"."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.seen: list[int] = []

    def run(self, samples):  # noqa: ANN001, ANN201
        from vidcap.engines.base import Caption

        self.seen.append(len(samples))
        if self.rank == 1 and len(samples) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (scripted)")
        if self.rank == 1 and any(s.key.startswith("bad") for s in samples):
            raise ValueError("scripted failure on rank 1")
        text = "other" if self.rank == 1 and samples[0].key.startswith("odd") else "same"
        return [Caption(text=f"{text} {s.key} {s.frames[0].shape}") for s in samples]


def agree_main(out_path: str) -> None:
    """Agreement between ranks without a model: OOM on one rank halves on all, a follower's error or a
    disagreement fails rank 0, and the followers go on to the next message."""
    import json

    from vidcap.engines.batching import caption_batch
    from vidcap.parallel.env import Bounds, RankEnv
    from vidcap.parallel.load import init_groups
    from vidcap.parallel.tp_engine import Channel, TensorParallelEngine, follow
    from vidcap.parallel.watchdog import Watchdog, set_rank_label

    env = RankEnv.from_env()
    env.export()
    set_rank_label(env.rank, env.world_size)
    bounds = Bounds.from_env()
    watchdog = Watchdog(env.rank, env.world_size, bounds).start()
    groups = init_groups(env, torch.device("cpu"), bounds)
    watchdog.attach_heartbeat(env.master_addr, env.master_port)
    channel = Channel(groups.control, env.rank, env.world_size)
    engine = ScriptedEngine(env.rank)
    if env.rank != 0:
        follow(engine, channel, watchdog, bounds)
        torch.distributed.barrier(group=groups.control)  # rank 0 must not exit before its "end" arrived
        return
    tp = TensorParallelEngine(engine, channel, watchdog, bounds, "scripted")
    batch = [Sample(key=f"k{i}", frames=[np.full((4 + i, 6, 3), i, dtype=np.uint8)], prompt="p") for i in range(4)]
    report: dict = {"halved": [c.text for c in caption_batch(tp, batch)], "seen": list(engine.seen)}
    for key in ("odd", "bad"):
        try:
            tp.caption([Sample(key=key, frames=[np.zeros((2, 2, 3), dtype=np.uint8)], prompt="p")])
            report[key] = "no error"
        except Exception as exc:  # noqa: BLE001
            report[key] = str(exc)
    report["after"] = [c.text for c in tp.caption(batch[:1])]  # the followers are still in step
    report["stats"] = tp.stats()
    channel.send("end", outcomes=[])
    torch.distributed.barrier(group=groups.control)
    with open(out_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    if sys.argv[1] == "agree":
        agree_main(sys.argv[2])
    else:
        main(sys.argv[1:])
    sys.stdout.flush()
    import os

    os._exit(0)
