"""The synthetic media every other test relies on: signatures that survive encoding, resizing, JPEG, and
catch a wrong orientation; videos whose frame i says i; broken files that are broken the intended way."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from vidcap.fixtures.synth import BROKEN_KINDS, _texture, draw_frame, frame_signature, make_broken, make_image, make_video

pytestmark = pytest.mark.timeout(60)


def decode_all(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize("seed,index", [(0, 0), (1, 1), (12345, 678), (2**24 - 1, 2**24 - 1)])
def test_signature_round_trip_survives_resize_and_jpeg(seed, index):
    frame = draw_frame(240, 320, seed, index, _texture(240, 320, seed))
    assert frame_signature(frame) == (seed, index)
    small = np.asarray(Image.fromarray(frame).resize((48, 36), Image.Resampling.BILINEAR))
    assert frame_signature(small) == (seed, index)
    large = np.asarray(Image.fromarray(frame).resize((1000, 700), Image.Resampling.BICUBIC))
    assert frame_signature(large) == (seed, index)
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=40)
    assert frame_signature(np.asarray(Image.open(buffer).convert("RGB"))) == (seed, index)


def test_signature_refuses_wrong_orientation_and_plain_frames():
    frame = draw_frame(240, 320, 5, 17)
    for turns in (1, 2, 3):
        with pytest.raises(ValueError):
            frame_signature(np.ascontiguousarray(np.rot90(frame, turns)))
    with pytest.raises(ValueError):
        frame_signature(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError):
        frame_signature(np.zeros((240, 320), np.uint8))


def test_neighbouring_frames_and_videos_differ():
    assert frame_signature(draw_frame(64, 96, 3, 10)) != frame_signature(draw_frame(64, 96, 3, 11))
    assert frame_signature(draw_frame(64, 96, 3, 10)) != frame_signature(draw_frame(64, 96, 4, 10))


def test_make_video_frame_i_shows_i(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=1.0, fps=24, seed=9)
    frames = decode_all(path)
    assert len(frames) == 24
    assert [frame_signature(f.to_ndarray(format="rgb24")) for f in frames] == [(9, i) for i in range(24)]
    assert [f.time for f in frames] == pytest.approx([i / 24 for i in range(24)])


def test_make_video_has_reordered_b_frames(tmp_path):
    """The exactness tests are only worth something if presentation order differs from decode order."""
    path = make_video(tmp_path / "v.mp4", seconds=2.0, seed=1)
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    assert pts != sorted(pts)


def test_make_video_variable_frame_rate(tmp_path):
    path = make_video(tmp_path / "vfr.mp4", seconds=2.0, fps=24, vfr=True, seed=2)
    frames = decode_all(path)
    steps = np.diff([f.time for f in frames])
    assert len(set(np.round(steps, 3))) >= 3  # irregular, not a constant rate
    assert [frame_signature(f.to_ndarray(format="rgb24"))[1] for f in frames] == list(range(len(frames)))


def test_make_video_rotation_metadata(tmp_path):
    path = make_video(tmp_path / "rot.mp4", width=320, height=240, rotate=90, seed=3)
    frame = decode_all(path)[5]
    assert (frame.width, frame.height) == (240, 320)  # stored turned
    assert frame.rotation == -90  # display matrix: turn 90 degrees clockwise to show
    stored = frame.to_ndarray(format="rgb24")
    with pytest.raises(ValueError):
        frame_signature(stored)
    assert frame_signature(np.ascontiguousarray(np.rot90(stored, k=-1))) == (3, 5)


def test_make_video_gop(tmp_path):
    path = make_video(tmp_path / "g.mp4", seconds=2.0, gop=12, seed=4)
    with av.open(str(path)) as container:
        keys = [i for i, p in enumerate(container.demux(video=0)) if p.size and p.is_keyframe]
    assert keys == [0, 12, 24, 36]


def test_make_image(tmp_path):
    for name in ("i.png", "i.jpg", "i.webp"):
        path = make_image(tmp_path / name, width=200, height=100, seed=8)
        with Image.open(path) as image:
            assert image.size == (200, 100)
            assert frame_signature(np.asarray(image.convert("RGB"))) == (8, 0)


def test_make_broken(tmp_path):
    assert set(BROKEN_KINDS) == {"empty", "truncated", "text", "audio_only", "corrupt_middle", "missing"}
    assert make_broken(tmp_path / "e.mp4", "empty").stat().st_size == 0
    assert not make_broken(tmp_path / "m.mp4", "missing").exists()
    assert make_broken(tmp_path / "t.mp4", "text").read_text().startswith("This is not a video")
    with av.open(str(make_broken(tmp_path / "a.mp4", "audio_only"))) as container:
        assert not container.streams.video and container.streams.audio
    truncated = make_broken(tmp_path / "tr.mp4", "truncated")
    with av.open(str(truncated)) as container:  # still opens: the index is at the front, the data is cut
        stream = container.streams.video[0]
        assert sum(1 for p in container.demux(stream) if p.size) < stream.frames
    corrupt = make_broken(tmp_path / "c.mp4", "corrupt_middle")
    assert corrupt.stat().st_size > 10_000
    with pytest.raises(ValueError):
        make_broken(tmp_path / "x.mp4", "bogus")


def test_vfr_times_are_exact_milliseconds(tmp_path):
    path = make_video(tmp_path / "vfr.mp4", seconds=1.0, fps=24, vfr=True, seed=6)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = sorted(Fraction(p.pts) * stream.time_base for p in container.demux(stream) if p.size)
    assert all((t * 1000).denominator == 1 for t in times)
