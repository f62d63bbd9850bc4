"""What a run does, frozen into RUN/config.json so that every shard task of it does the same thing.

    config["task"]   = {"name": "caption", "batch_size": 4, "max_attempts": 3, "settings": {...}}
    config["source"] = {"data_root": ..., "path_column": "path", "backend": "pyav", "readers": 1, "ahead": 16}
    config["engine"] = {"name": "hf", "settings": {...the engine's own Settings...}}

A later submission with other identity settings is refused unless `--force-config` (results made with two
models or prompts would be mixed in one output without anyone knowing), except while no shard has started:
then nothing was made with the old settings and the new ones simply replace them. Operational fields
(vidcap.settings.operational) may always change. Run folders written before tasks existed hold a flat
config["job"]; it is read as a caption task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vidcap.engines import engine_class, engine_settings
from vidcap.engines.base import Needs
from vidcap.errors import UserError
from vidcap.run import RunDir
from vidcap.settings import changes, from_dict, operational, to_dict
from vidcap.tasks import task_class, task_settings
from vidcap.tasks.base import Task


@dataclass(frozen=True)
class SourceSettings:
    """Where rows' inputs come from and how they are read (the task says what is read: frames or a column)."""

    data_root: str = ""  # relative media paths start here (default: the manifest's folder)
    path_column: str = "path"  # the column naming each row's video or image (media tasks only)
    backend: str = "pyav"  # video decoder: pyav or decord
    readers: int = operational(1)  # prefetch processes; 0 reads in the worker itself
    ahead: int = operational(16)  # items read ahead of the engine at most


@dataclass(frozen=True)
class TaskSpec:
    """One run's task, source and engine, each with its own settings."""

    task: str = "caption"
    settings: Any = None  # the task's Settings
    engine: str = "hf"
    engine_settings: Any = None  # the engine's Settings
    source: SourceSettings = field(default_factory=SourceSettings)
    batch_size: int = 4
    max_attempts: int = 3  # a row that failed this often is not retried by run-shard

    def __post_init__(self) -> None:
        cls = task_class(self.task)
        if self.settings is None:
            object.__setattr__(self, "settings", cls.Settings())
        if self.engine_settings is None:
            object.__setattr__(self, "engine_settings", engine_class(self.engine).Settings())
        if cls.source not in engine_class(self.engine).accepts:
            raise UserError(f"engine {self.engine!r} cannot read the {cls.source} the {self.task} task gives it "
                            f"(engines for it: {', '.join(cls.engines)})")
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.max_attempts < 1:
            raise UserError("--max-attempts must be at least 1")

    # -- what the parts of a run ask of it ----------------------------------------------------------
    def make_task(self) -> Task:
        return task_class(self.task)(self.settings)

    def make_engine(self) -> Any:
        """The engine, not opened."""
        return engine_class(self.engine)(self.engine_settings)

    def needs(self) -> Needs:
        return engine_class(self.engine).needs(self.engine_settings)

    def preflight(self) -> None:
        """What can be checked before anything is frozen or submitted (no model load)."""
        engine_class(self.engine).preflight(self.engine_settings, self)

    @property
    def prompt(self) -> str:
        return self.make_task().prompt

    @property
    def frames_per_sample(self) -> int:
        """Frames each sample carries, for an engine's start-up check (0: a text task)."""
        task = self.make_task()
        plan = task.frame_plan()
        if plan is None:
            return 0
        return plan.num_frames if task.is_video else 1

    @property
    def is_video(self) -> bool:
        return self.make_task().is_video

    # -- stored form ---------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        return {
            "task": {"name": self.task, "batch_size": self.batch_size, "max_attempts": self.max_attempts,
                     "settings": to_dict(self.settings)},
            "source": to_dict(self.source),
            "engine": {"name": self.engine, "settings": to_dict(self.engine_settings)},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TaskSpec":
        if "task" not in config and "job" in config:
            return _from_job(config["job"])
        if "task" not in config:
            raise UserError("no task in this run yet (run `vidcap submit` or `vidcap caption` on it first)")
        task, engine = config["task"], config.get("engine", {})
        return cls(
            task=task["name"], settings=task_settings(task["name"], task.get("settings", {})),
            engine=engine.get("name", "hf"),
            engine_settings=engine_settings(engine.get("name", "hf"), engine.get("settings", {})),
            source=from_dict(SourceSettings, config.get("source", {}), where="source settings"),
            batch_size=int(task.get("batch_size", 4)), max_attempts=int(task.get("max_attempts", 3)),
        )

    def changes(self, old: "TaskSpec") -> list[str]:
        """Identity settings that differ from `old`, as 'name: old -> new'."""
        found = []
        if old.task != self.task:
            found.append(f"task: {old.task!r} -> {self.task!r}")
        else:
            found += changes(old.settings, self.settings)
        found += changes(old.source, self.source)
        if old.max_attempts != self.max_attempts:
            found.append(f"max_attempts: {old.max_attempts!r} -> {self.max_attempts!r}")
        if old.engine != self.engine:
            found.append(f"engine: {old.engine!r} -> {self.engine!r}")
        else:
            found += changes(old.engine_settings, self.engine_settings)
        return found


def describe_run(config: dict[str, Any]) -> str:
    """One line for `vidcap status`: task, engine and model, and the settings people look for."""
    if "task" not in config and "job" not in config:
        return "(not frozen yet)"
    spec = TaskSpec.from_config(config)
    model = getattr(spec.engine_settings, "model", "")
    parts = [spec.task, f"engine {spec.engine}" + (f":{model}" if model else "")]
    for name, shown in (("prompt_name", "prompt"), ("num_frames", "frames"), ("text_column", "column")):
        if hasattr(spec.settings, name):
            parts.append(f"{shown} {getattr(spec.settings, name)}")
    parts += [f"batch {spec.batch_size}", f"ranks {spec.needs().ranks}"]
    return "  ".join(parts)


def load_spec(run: RunDir) -> TaskSpec:
    config = run.load_config()
    if "task" not in config and "job" not in config:
        raise UserError(f"{run.root}: no task config yet (run `vidcap submit` on it first)")
    return TaskSpec.from_config(config)


def run_started(run: RunDir) -> bool:
    """Whether any shard has written a result or finished: from then on, results depend on the settings."""
    for folder in (run.results_dir, run.done_dir):
        try:
            if any(True for _ in folder.iterdir()):
                return True
        except FileNotFoundError:
            continue
    return False


def freeze_spec(run: RunDir, spec: TaskSpec, force: bool = False) -> None:
    """Store the spec in the run config, or check it matches what is stored."""
    config = run.load_config()
    if ("task" in config or "job" in config) and not force and run_started(run):
        changed = spec.changes(TaskSpec.from_config(config))
        if changed:
            raise UserError(
                f"{run.root}: this run was started with other settings ({'; '.join(changed)}); "
                f"use another --run, or --force-config to continue with the new ones"
            )
    config.pop("job", None)
    config.update(spec.to_config())
    run.save_config(config)


# -- run folders from before tasks -------------------------------------------------------------------
_OLD_ENGINE_NAMES = {"noop": {"noop_latency_s": "latency_s"}}


def _from_job(job: dict[str, Any]) -> TaskSpec:
    """A flat pre-task config["job"] (one EngineConfig for every engine) read as a caption task."""
    flat = dict(job.get("engine", {}))
    name = flat.get("engine", "hf")
    renames = _OLD_ENGINE_NAMES.get(name, {})
    wanted = {f.name for f in dataclasses.fields(engine_class(name).Settings)}
    values = {renames.get(k, k): v for k, v in flat.items() if renames.get(k, k) in wanted}
    caption = {"prompt_name": flat.get("prompt_name", "video"), "prompt": flat.get("prompt", ""),
               "num_frames": job.get("num_frames", 3), "resize": job.get("resize", 336),
               "is_video": job.get("is_video", True)}
    source = {k: job[k] for k in ("data_root", "path_column", "backend", "readers", "ahead") if k in job}
    return TaskSpec(task="caption", settings=task_settings("caption", caption), engine=name,
                    engine_settings=engine_settings(name, values),
                    source=from_dict(SourceSettings, source, where="source settings"),
                    batch_size=int(job.get("batch_size", 4)), max_attempts=int(job.get("max_attempts", 3)))
