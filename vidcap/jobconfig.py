"""What a captioning job does, frozen into the run folder so every shard task runs the same job.

The job config is written once by `vidcap submit` (or `caption`); a later submit with different options
is refused unless `--force-config`, because results made with two models or prompts would be mixed in one
output without anyone knowing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vidcap.engines import EngineConfig
from vidcap.errors import UserError
from vidcap.run import RunDir

# fields that do not change what a caption is: they may differ between submissions of one run
OPERATIONAL = {"batch_size", "readers", "ahead", "progress"}
ENGINE_OPERATIONAL = {"concurrency", "requests_per_minute", "request_timeout_s", "max_request_attempts",
                      "api_key_file", "device", "attn", "tp_size", "tp_backend", "ds_kernel_inject", "noop_latency_s", "prices"}


@dataclass
class JobConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    num_frames: int = 3
    resize: int | None = 336
    backend: str = "pyav"
    batch_size: int = 4
    readers: int = 1  # prefetch processes; 0 reads in the worker itself
    ahead: int = 16  # items read ahead of the model at most
    max_attempts: int = 3  # a row that failed this often is not retried by run-shard
    is_video: bool = True  # videos (K frames) or images (1 frame): what the prompt was checked for
    path_column: str = "path"
    data_root: str = ""  # relative manifest paths are taken from here

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["engine"] = self.engine.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["engine"] = EngineConfig.from_dict(data.get("engine", {}))
        return cls(**values)


def check_engine(engine, job: JobConfig) -> None:  # noqa: ANN001 - Engine; imported lazily by callers
    """Refuse at start what cannot work (a prompt too long for the model's context, say)."""
    engine.check_prompt(job.engine.prompt, job.num_frames if job.is_video else 1, job.is_video)


def load_job(run: RunDir) -> JobConfig:
    config = run.load_config()
    if "job" not in config:
        raise UserError(f"{run.root}: no job config yet (run `vidcap submit` on it first)")
    return JobConfig.from_dict(config["job"])


def freeze_job(run: RunDir, job: JobConfig, force: bool = False) -> None:
    """Store the job in the run config, or check it matches what is stored."""
    config = run.load_config()
    new = job.to_dict()
    old = config.get("job")
    if old is not None and not force:
        changed = _meaningful_changes(old, new)
        if changed:
            raise UserError(
                f"{run.root}: this run was started with other settings ({'; '.join(changed)}); "
                f"use another --run, or --force-config to continue with the new ones"
            )
    config["job"] = new
    run.save_config(config)


def _meaningful_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        if name in OPERATIONAL or name == "engine":
            continue
        if old.get(name) != new.get(name):
            changes.append(f"{name}: {old.get(name)!r} -> {new.get(name)!r}")
    old_engine, new_engine = old.get("engine", {}), new.get("engine", {})
    for name in sorted(set(old_engine) | set(new_engine)):
        if name not in ENGINE_OPERATIONAL and old_engine.get(name) != new_engine.get(name):
            shown = "(prompt text)" if name == "prompt" else f"{old_engine.get(name)!r} -> {new_engine.get(name)!r}"
            changes.append(f"{name}: {shown}")
    return changes
