"""Before the work starts: what is checked before a run is frozen (issue 11 item 11), and what a shard task
does first, the lock, before any result is read or any model loaded (issue 11 item 4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import pytest

from vidcap.cli import main
from vidcap.engines import ENGINES
from vidcap.engines.base import FRAMES, Engine, Result, Sample
from vidcap.errors import UserError
from vidcap.fixtures.tiny_models import make_tiny_model
from vidcap.manifest.split import split
from vidcap.results import ResultWriter, ShardBusy, read_results
from vidcap.run import RunDir
from vidcap.scheduler.local import run_local
from vidcap.tasks.caption import CaptionSettings
from vidcap.tasks.spec import TaskSpec, freeze_spec, load_spec
from vidcap.worker import run_shard
from worker_helpers import make_clips


@dataclass(frozen=True)
class ProbeSettings:
    fail_open: bool = False


class ProbeEngine(Engine):
    """Records when it is opened and closed; refuses the task at open when told to (a prompt too long)."""

    name = "probe"
    accepts = frozenset({FRAMES})
    Settings = ProbeSettings
    events: list[str] = []

    def open(self, spec=None) -> None:  # noqa: ANN001
        self.events.append("open")
        if self.settings.fail_open:
            raise UserError("the prompt is too long for this model (probe)")

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        return [Result(text="probed") for _ in samples]

    def close(self) -> None:
        self.events.append("close")


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> type[ProbeEngine]:
    monkeypatch.setitem(ENGINES, "probe", f"{__name__}:ProbeEngine")
    ProbeEngine.events = []
    return ProbeEngine


def probe_run(tmp_path, fail_open: bool = False) -> RunDir:
    run = RunDir.at(tmp_path / "run")
    split(make_clips(tmp_path / "v", 3), run, shards=1)
    freeze_spec(run, TaskSpec(task="caption", settings=CaptionSettings(num_frames=1, resize=None),
                              engine="probe", engine_settings=ProbeSettings(fail_open=fail_open)))
    return run


def test_a_duplicate_task_stops_at_the_lock_before_loading_anything(tmp_path, probe) -> None:
    run = probe_run(tmp_path)
    with ResultWriter(run, 0):  # the first task of this shard, still working
        with pytest.raises(ShardBusy):
            run_shard(run, 0, progress=False)
    assert probe.events == []  # no model loaded, no reader started
    assert run_shard(run, 0, progress=False).finished
    assert probe.events == ["open", "close"]


def test_the_engine_is_closed_when_it_refuses_the_task_at_open(tmp_path, probe) -> None:
    run = probe_run(tmp_path, fail_open=True)
    with pytest.raises(UserError, match="too long"):
        run_shard(run, 0, progress=False)
    assert probe.events == ["open", "close"]
    probe.events.clear()
    with pytest.raises(UserError, match="too long"):
        run_local(run, [0], progress=False)  # the local executor owns one engine for all shards
    assert probe.events == ["open", "close"]
    assert read_results(run, 0).num_rows == 0 and not run.is_done(0)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny-llava", family="llava")


@pytest.mark.timeout(300)
def test_a_typo_in_the_model_freezes_nothing_and_the_fixed_command_runs(tmp_path, tiny_llava, capsys) -> None:
    manifest = make_clips(tmp_path / "v", 2)
    output = tmp_path / "o.csv"
    common = ["caption", str(manifest), "--output", str(output), "--max-new-tokens", "4", "--num-frames", "2",
              "--resize", "64"]
    assert main(common + ["--model", "/nonexistent/model"]) == 2
    err = capsys.readouterr().err
    assert "--model /nonexistent/model: no such folder" in err and "Traceback" not in err
    assert not (tmp_path / "o.run" / "config.json").exists()
    assert main(common + ["--model", str(tiny_llava)]) == 0
    assert "2 rows: 2 captioned" in capsys.readouterr().out
    assert load_spec(RunDir.at(tmp_path / "o.run")).engine_settings.model == str(tiny_llava)


def test_a_prompt_too_long_is_refused_before_the_run_is_frozen(tmp_path, tiny_llava, capsys) -> None:
    manifest = make_clips(tmp_path / "v", 2)
    prompt = tmp_path / "long.txt"
    prompt.write_text("# kind: video\n" + "describe every detail of the scene carefully " * 900)
    code = main(["submit", str(manifest), "--run", str(tmp_path / "run"), "--model", str(tiny_llava),
                 "--prompt-file", str(prompt), "--num-frames", "2", "--prepare-only"])
    assert code == 2 and "> context 4096" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_settings_may_change_until_a_shard_has_started(tmp_path, capsys) -> None:
    manifest = make_clips(tmp_path / "v", 2)
    args = ["submit", str(manifest), "--run", str(tmp_path / "run"), "--engine", "noop", "--shards", "1"]
    assert main(args + ["--prompt", "video-short", "--prepare-only"]) == 0
    assert main(args + ["--prepare-only"]) == 0  # nothing ran with the old prompt: the new one replaces it
    assert load_spec(RunDir.at(tmp_path / "run")).settings.prompt_name == "video"
    assert main(args) == 0
    assert main(args + ["--prompt", "video-short"]) == 2
    assert "prompt_name: 'video' -> 'video-short'" in capsys.readouterr().err


def test_a_run_folder_from_before_tasks_is_read_as_a_caption_run(tmp_path, capsys) -> None:
    run = RunDir.at(tmp_path / "run")
    split(make_clips(tmp_path / "v", 3), run, shards=1)
    config = run.load_config()
    config["job"] = {  # what vidcap wrote before tasks: one flat EngineConfig for every engine
        "engine": {"engine": "noop", "model": "", "prompt_name": "video", "prompt": "Describe.", "num_frames": 3,
                   "max_new_tokens": 256, "dtype": None, "attn": None, "device": None, "tp_size": 1,
                   "tp_backend": "deepspeed", "api_base": None, "api_key_file": None, "concurrency": 8,
                   "requests_per_minute": None, "request_timeout_s": 120.0, "max_request_attempts": 6,
                   "image_detail": "low", "jpeg_quality": 85, "jpeg_max_side": 768, "prices": {},
                   "noop_latency_s": 0.0},
        "num_frames": 2, "resize": None, "backend": "pyav", "batch_size": 2, "readers": 1, "ahead": 16,
        "max_attempts": 3, "is_video": True, "path_column": "path", "data_root": ""}
    run.save_config(config)
    spec = load_spec(run)
    assert (spec.task, spec.engine, spec.settings.num_frames, spec.settings.prompt, spec.batch_size) == \
        ("caption", "noop", 2, "Describe.", 2)
    assert main(["resume", str(run.root)]) == 0
    rows = read_results(run, 0).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 3 and rows[0]["text"].startswith("[noop engine: no model ran; 2 ")
    stored = json.loads(run.config_path.read_text())
    assert "job" in stored  # resuming does not rewrite the old config


def test_path_column_is_honoured_and_images_are_told_by_content_not_name(tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from vidcap.fixtures.synth import make_video

    folder = tmp_path / "media"
    folder.mkdir()
    for i in range(2):  # images named like videos
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(folder / f"still_{i}.mp4", format="PNG")
    (folder / "m.csv").write_text("clip,note\nstill_0.mp4,a\nstill_1.mp4,b\n")
    args = ["submit", str(folder / "m.csv"), "--run", str(tmp_path / "run"), "--engine", "noop", "--shards", "1",
            "--key", "clip", "--path-column", "clip", "--num-frames", "2"]
    assert main(args) == 0
    spec = load_spec(RunDir.at(tmp_path / "run"))
    assert (spec.settings.is_video, spec.settings.prompt_name, spec.source.path_column) == (False, "image", "clip")
    rows = read_results(RunDir.at(tmp_path / "run"), 0).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok"] and "1 frames of 504x336" in rows[0]["text"]  # resized to 336

    make_video(folder / "moving.mp4", seconds=0.5, fps=12, width=96, height=64, seed=1)
    (folder / "moving.mp4").rename(folder / "moving.jpg")  # a video named like an image
    (folder / "v.csv").write_text("path\nmoving.jpg\n")
    assert main(["submit", str(folder / "v.csv"), "--run", str(tmp_path / "run2"), "--engine", "noop",
                 "--shards", "1", "--num-frames", "2"]) == 0
    assert load_spec(RunDir.at(tmp_path / "run2")).settings.prompt_name == "video"
    assert main(["submit", str(folder / "v.csv"), "--run", str(tmp_path / "run3"), "--engine", "noop",
                 "--path-column", "video"]) == 2
    assert "no 'video' column" in capsys.readouterr().err
