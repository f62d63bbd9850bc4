"""Process groups and the sharded model of one tensor-parallel rank (DeepSpeed AutoTP or transformers TP).

Process groups. The rendezvous store is made here (rank 0 hosts it) so that the watchdog can reuse its
address for heartbeats. The default group carries the model's collectives: NCCL on GPUs, gloo on CPU (where
DeepSpeed reduces through its own shared-memory op instead). A second group, always gloo, carries vidcap's
control traffic (batches, agreement, end): it never mixes with the model's collectives, so a rank that left
`generate` early (an exception on one rank) cannot pair its small control message with a peer's half-done
all-reduce and corrupt it; the peers wait instead, and the watchdog ends the task.

DeepSpeed AutoTP (`--tp-backend deepspeed`, default): every rank loads the whole checkpoint on the CPU
through `hf_load.load_model`, then `deepspeed.init_inference(replace_with_kernel_inject=False)` shards it in
place and moves its part to the rank's device; the engine gets `ds_engine.module`. AutoTP also shards the
vision tower, which is exact for CLIP towers (LLaVA family) but wrong for towers with a fused qkv projection
(Qwen2-VL: logits off by 4e-3): for those families the injection policy names the language decoder layer
only, and the tower stays whole on every rank. Host memory: the whole model per rank before sharding.

transformers (`--tp-backend transformers`): `from_pretrained(distributed_config=DistributedConfig(
tp_plan="auto"))`: each rank loads only its shard of the language model (the plan of the checkpoint's class;
the vision tower is replicated). transformers requires the `accelerate` package for this path.

DeepSpeed's CPU all-reduce creates one 69 MB segment per rank in /dev/shm named after MASTER_ADDR and
MASTER_PORT, and never removes it: every run leaked them, and a stale segment under a reused port could be
mapped by a peer before its owner re-created it. Here each rank removes a stale segment of its own name
before the op starts, and its fresh one as soon as every peer has mapped it (the mappings stay valid), so
nothing is left even after kill -9.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vidcap.engines.hf_settings import HFSettings
from vidcap.engines.hf import HFEngine
from vidcap.engines.hf_load import DTYPES, load_model, load_processor, resolve_attn, resolve_dtype
from vidcap.errors import UserError
from vidcap.parallel.env import Bounds, RankEnv

log = logging.getLogger(__name__)

BACKENDS = ("deepspeed", "transformers")
#: control-group timeout: followers wait here for rank 0's next message while it reads frames; liveness is
#: the heartbeat's job, not this timeout's
CONTROL_TIMEOUT = timedelta(hours=24)
#: model types whose vision tower DeepSpeed's AutoTP splits wrongly (fused qkv): shard the language model only
LANGUAGE_ONLY_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"})
#: row-parallel (all-reduce) linears of a Llama/Qwen-style decoder layer
ROW_PARALLEL = ("self_attn.o_proj", "mlp.down_proj")


@dataclass
class Groups:
    store: Any
    control: Any  # gloo group for vidcap's own messages
    backend: str  # of the default group


def rank_device(config: HFSettings, env: RankEnv) -> torch.device:
    """cuda:LOCAL_RANK when every GPU of the node is visible, cuda:0 when Slurm bound one GPU to this task;
    the CPU when asked or when there is no GPU."""
    want = torch.device(config.device) if config.device else \
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.type != "cuda":
        return want
    if not torch.cuda.is_available():
        raise UserError(f"--device {config.device}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if want.index is not None:
        index = want.index
    elif count > env.local_rank:
        index = env.local_rank
    elif count == 1:
        index = 0  # --gpus-per-task: this task sees its own GPU only
    else:
        raise UserError(f"tensor-parallel rank {env.rank} (local rank {env.local_rank}) sees {count} GPUs: "
                        "give each rank a GPU (--gpus-per-task 1) or run on a node with one GPU per rank")
    torch.cuda.set_device(index)
    os.environ["LOCAL_RANK"] = str(index)  # what DeepSpeed and transformers bind the rank's device from
    return torch.device("cuda", index)


def init_groups(env: RankEnv, device: torch.device, bounds: Bounds) -> Groups:
    """Rendezvous (rank 0 hosts the store), the default group for the model, a gloo group for control."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    start = timedelta(seconds=bounds.start)
    try:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=env.leader,
                              timeout=start, wait_for_workers=True)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"tensor-parallel rendezvous on {env.master_addr}:{env.master_port} failed for rank "
                        f"{env.rank}: {_first_line(exc)}") from None
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size,
                            timeout=max(start, timedelta(seconds=bounds.batch)))
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return Groups(store=store, control=control, backend=backend)


def load_rank_engine(config: Any, env: RankEnv, device: torch.device, groups: Groups) -> Any:
    """This rank's engine over its shard of the model (HFEngine, or HFTextEngine for a chat LM's settings);
    every rank calls it at the same time."""
    if not config.model:
        raise UserError("no model given: pass a hub id or a local checkpoint folder")
    if config.tp_backend not in BACKENDS:
        raise UserError(f"unknown --tp-backend {config.tp_backend!r} (choose from {', '.join(BACKENDS)})")
    if type(config).__name__ == "PllavaSettings":  # its own loader: strict keys, AutoTP over the language model
        from vidcap.engines.pllava_tp import load_rank_engine as load_pllava_rank

        return load_pllava_rank(config, env, device, groups)  # type: ignore[return-value]
    from vidcap.engines.hf_text import HFTextEngine, HFTextSettings

    text = isinstance(config, HFTextSettings)
    if text:
        from vidcap.engines.hf_chat import load_chat_tokenizer

        processor = load_chat_tokenizer(config.model)
    else:
        processor = load_processor(config.model)
    if config.tp_backend == "deepspeed":
        model = _load_deepspeed(config, env, device, groups)
    else:
        model = _load_transformers(config, env, device)
    engine = HFTextEngine(config) if text else HFEngine(config)
    return engine.attach(model, processor, device=device)


def _load_whole(config: Any) -> Any:
    """The whole checkpoint as the engine's settings say (device and dtype already set by the caller)."""
    from vidcap.engines.hf_text import HFTextSettings

    if isinstance(config, HFTextSettings):
        from vidcap.engines.hf_chat import load_chat_model

        return load_chat_model(config.model, device=config.device, dtype=config.dtype, attn=config.attn)
    return load_model(config)


def _load_deepspeed(config: HFSettings, env: RankEnv, device: torch.device, groups: Groups) -> Any:
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("--tp-backend deepspeed needs DeepSpeed: pip install deepspeed (DS_BUILD_OPS=0 on a "
                        "machine without CUDA), or use --tp-backend transformers")
    import deepspeed

    init_deepspeed(env, device, groups)
    dtype = resolve_dtype(config.dtype, device)
    # the whole checkpoint on the CPU, in the rank's dtype; init_inference shards it and moves the shard
    name = next(k for k, v in DTYPES.items() if v == dtype)
    model = _load_whole(dataclasses.replace(config, device="cpu", dtype=name))
    policy = language_only_policy(model)
    kwargs: dict[str, Any] = {}
    # --ds-kernel-inject is the hf engine's setting; the chat engine for tags has none
    inject = getattr(config, "ds_kernel_inject", False) and use_kernel_inject(model, device, policy, env.leader)
    if policy is not None and not inject:
        kwargs["injection_policy"] = policy
        log.info("DeepSpeed AutoTP limited to the language decoder layers of %s", model.config.model_type)
    engine = deepspeed.init_inference(model, tensor_parallel={"tp_size": env.world_size}, dtype=dtype,
                                      replace_with_kernel_inject=inject, **kwargs)
    module = engine.module
    if device.type == "cuda":
        module = module.to(device)
    return module.eval()


def kernel_inject_layers(model: Any) -> list[str]:
    """Names of the language model's decoder layer classes that DeepSpeed has fused inference kernels for
    (its kernel-injection policies: Llama, GPT-NeoX, OPT, BLOOM, ... but not Mistral or Qwen2)."""
    from deepspeed.module_inject.replace_policy import replace_policies

    known = set()
    for policy in replace_policies:
        try:
            policy(None)  # a throw-away instance fills in the transformers class it replaces
        except Exception:  # noqa: BLE001 - a policy for a library that is not installed
            continue
        layer = policy._orig_layer_class
        known.update(layer if isinstance(layer, list) else [layer] if layer is not None else [])
    layers = language_layers(model)
    kinds = {type(layer) for layer in layers} if layers is not None else set()
    return sorted(k.__name__ for k in kinds if k in known)


def use_kernel_inject(model: Any, device: torch.device, policy: Any, leader: bool) -> bool:
    """--ds-kernel-inject: refused on the CPU (the kernels are CUDA's); where DeepSpeed has no kernels for
    this language model, or only a partial policy fits it, AutoTP runs instead and rank 0 says so."""
    if device.type != "cuda":
        raise UserError("--ds-kernel-inject needs CUDA GPUs: DeepSpeed's fused inference kernels do not run on "
                        "the CPU (drop the flag to use AutoTP)")
    layers = language_layers(model)
    kind = type(layers[0]).__name__ if layers is not None and len(layers) else "?"
    reason = ""
    if policy is not None:
        reason = f"{model.config.model_type} needs its own tensor-parallel policy"
    elif not kernel_inject_layers(model):
        reason = f"DeepSpeed has no fused kernels for {kind}"
    if reason:
        if leader:
            print(f"vidcap: --ds-kernel-inject: {reason}; using AutoTP", file=sys.stderr)
        return False
    return True


def init_deepspeed(env: RankEnv, device: torch.device, groups: Groups) -> None:
    """DeepSpeed's distributed state over the default group, its CPU all-reduce segment left nowhere."""
    import deepspeed
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)
    segment = _shm_segment(env)
    if device.type == "cpu":
        _unlink(segment)  # a stale one of ours would be mapped by a peer as if it were new
        dist.barrier(group=groups.control)
    deepspeed.init_distributed(dist_backend=groups.backend, timeout=timedelta(seconds=3600))
    if device.type == "cpu":
        dist.barrier(group=groups.control)  # every peer has mapped every segment by now
        _unlink(segment)


def language_only_policy(model: Any) -> dict[type, tuple[str, ...]] | None:
    """For families whose vision tower AutoTP splits wrongly: an injection policy naming only the language
    decoder layer class and its row-parallel linears. None for every other family (plain AutoTP)."""
    if getattr(model.config, "model_type", "") not in LANGUAGE_ONLY_TYPES:
        return None
    layers = language_layers(model)
    if layers is None or len(layers) == 0:
        raise UserError(f"cannot find the language decoder layers of {model.config.model_type} to limit "
                        "DeepSpeed's tensor parallelism to them; use --tp-backend transformers")
    layer = layers[0]
    names = tuple(n for n in ROW_PARALLEL if _has_submodule(layer, n))
    if len(names) != len(ROW_PARALLEL):
        raise UserError(f"{type(layer).__name__} has no {' / '.join(ROW_PARALLEL)}: cannot build a DeepSpeed "
                        "injection policy for it; use --tp-backend transformers")
    return {type(layer): names}


def language_layers(model: Any) -> Any:
    """The ModuleList of the language model's decoder layers (transformers 5: model.language_model.layers)."""
    for path in ("model.language_model.layers", "language_model.model.layers", "language_model.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    return None


def _has_submodule(module: Any, name: str) -> bool:
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False


def _load_transformers(config: HFSettings, env: RankEnv, device: torch.device) -> Any:
    if importlib.util.find_spec("accelerate") is None:
        raise UserError("--tp-backend transformers needs the accelerate package (transformers refuses a "
                        "tp_plan without it): pip install accelerate")
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from vidcap.engines.hf_text import HFTextSettings
    from transformers.distributed import DistributedConfig

    kwargs: dict[str, Any] = {"dtype": resolve_dtype(config.dtype, device),
                              "distributed_config": DistributedConfig(tp_plan="auto")}
    attn = resolve_attn(config.attn, device)
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        auto = AutoModelForCausalLM if isinstance(config, HFTextSettings) else AutoModelForImageTextToText
        model = auto.from_pretrained(config.model, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {config.model!r} with transformers' tensor parallelism: "
                        f"{_first_line(exc)}") from exc
    return model.eval()


def _shm_segment(env: RankEnv) -> Path:
    """The /dev/shm file DeepSpeed's CPU all-reduce makes for this rank (see shm.cpp: shm_initialize)."""
    return Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{env.master_addr}_{env.master_port}_{env.rank}"


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
