"""`vidcap frames`: PNG files in order that are the frames read_frames gives, one JSON object on stdout,
and a one-line error with a non-zero exit for a broken or missing file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vidcap.cli import main
from vidcap.frames import read_frames
from vidcap.fixtures.synth import frame_signature, make_broken, make_image, make_video

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("cli") / "clip.mp4", seconds=2.0, seed=31, gop=12)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_frames_writes_pngs_in_order_and_prints_json(tmp_path, capsys, video, backend):
    out = tmp_path / "out"
    assert main(["frames", str(video), "--num-frames", "4", "--resize", "120", "--backend", backend,
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    expected = read_frames(str(video), 4, resize=120, backend=backend)
    assert report["indices"] == expected.indices == [6, 18, 30, 42]
    assert report["timestamps"] == pytest.approx(expected.timestamps)
    assert report["is_video"] is True and report["backend"] == backend and report["frame_count"] == 48
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["000.png", "001.png", "002.png", "003.png"]
    assert report["files"] == [str(f) for f in files]
    for path, frame, index in zip(files, expected.frames, expected.indices):
        written = np.asarray(Image.open(path))
        assert written.shape == (120, 160, 3) and np.array_equal(written, frame)  # PNG is lossless
        assert frame_signature(written) == (31, index)


def test_frames_of_an_image(tmp_path, capsys):
    image = make_image(tmp_path / "still.jpg", width=64, height=48, seed=32)
    assert main(["frames", str(image), "--num-frames", "3", "--out", str(tmp_path / "o")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["is_video"] is False and report["indices"] == [0] and report["timestamps"] == [0.0]
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["000.png"]


def test_without_out_only_json(capsys, video):
    assert main(["frames", str(video)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["indices"] == [4, 24, 43] and report["files"] == []


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("kind,reason", [("missing", "missing file"), ("text", "not a video"),
                                         ("truncated", "truncated or corrupt: "), ("empty", "empty file"),
                                         ("audio_only", "no video stream")])
def test_broken_file_is_one_line_and_exit_2(tmp_path, capfd, kind, reason, backend):
    path = make_broken(tmp_path / "bad.mp4", kind)
    capfd.readouterr()
    assert main(["frames", str(path), "--backend", backend, "--out", str(tmp_path / "o")]) == 2
    captured = capfd.readouterr()  # file descriptors: the decoders' C libraries print there, not to sys.stderr
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and f"bad.mp4: {reason}" in captured.err
    assert not (tmp_path / "o").exists()


def test_too_few_frames_and_bad_flags(tmp_path, capsys, video):
    assert main(["frames", str(video), "--num-frames", "100"]) == 2
    assert "too few frames: 48 < 100" in capsys.readouterr().err
    assert main(["frames", str(video), "--num-frames", "0"]) == 2
    assert "--num-frames" in capsys.readouterr().err


def test_real_command_line(tmp_path, video):
    ok = subprocess.run([sys.executable, "-m", "vidcap", "frames", str(video), "-k", "2", "--out", str(tmp_path)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["indices"] == [12, 36]
    bad = subprocess.run([sys.executable, "-m", "vidcap", "frames", str(tmp_path / "nope.mp4")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [f"vidcap frames: error: {tmp_path / 'nope.mp4'}: missing file"]


def test_resize_zero_keeps_the_size_as_caption_does(tmp_path, capsys, video):
    """`caption --resize 0` means "keep the size"; `frames --resize 0` means the same (it was refused)."""
    assert main(["frames", str(video), "--num-frames", "2", "--resize", "0", "--out", str(tmp_path / "o")]) == 0
    report = json.loads(capsys.readouterr().out)
    kept = read_frames(str(video), 2, resize=None)
    assert [report["height"], report["width"]] == list(kept.frames[0].shape[:2])
    assert main(["frames", str(video), "--resize", "-1"]) == 2
