"""One rank of test_pllava_tp's equivalence check: `python -m pllava_tp_ranks OUT MODEL`.

Started by vidcap's own launcher (torchrun's variables). Each rank joins the process groups, loads the tiny
PLLaVA through vidcap's tensor-parallel loader (DeepSpeed AutoTP over the language model), and runs greedy
generation on the shared fixed batch with the logits kept; rank 0 saves tokens, logits and local shapes.
"""

from __future__ import annotations

import sys

import torch

from pllava_helpers import fixed_batch, greedy
from vidcap.engines.pllava_settings import PllavaSettings

MAX_NEW = 12


def main(argv: list[str]) -> None:
    from vidcap.parallel.env import Bounds, RankEnv
    from vidcap.parallel.load import init_groups, load_rank_engine, rank_device
    from vidcap.parallel.watchdog import set_rank_label

    out_path, model = argv
    env = RankEnv.from_env()
    env.export()
    set_rank_label(env.rank, env.world_size)
    torch.set_num_threads(1)
    config = PllavaSettings(model=model, max_new_tokens=MAX_NEW, tp_size=env.world_size, device="cpu")
    device = rank_device(config, env)
    groups = init_groups(env, device, Bounds.from_env())
    engine = load_rank_engine(config, env, device, groups)
    tokens, logits = greedy(engine, fixed_batch())
    layer = engine.model.language_model.model.layers[0]
    shapes = {"language_q": list(layer.self_attn.q_proj.weight.shape),
              "vision_q": list(engine.model.vision_tower.encoder.layers[0].self_attn.q_proj.weight.shape)}
    if env.rank == 0:
        torch.save({"tokens": tokens, "logits": logits, "shapes": shapes}, out_path)


if __name__ == "__main__":
    main(sys.argv[1:])
