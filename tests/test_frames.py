"""vidcap.frames: the sampled frames are exactly frames i of a straight decode, on both backends, on
constant and variable frame rate, rotated, multi-keyframe and 720p videos, other codecs and images; and
every broken file is a FrameError with a short reason, never a black or neighbouring frame."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
from PIL import Image

from vidcap.frames import FrameError, FrameSet, read_frames, sample_indices, sample_positions
from vidcap.frames.probe import sniff
from vidcap.frames.transform import resized_size
from vidcap.fixtures.synth import frame_signature, make_broken, make_image, make_video

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["pyav", "decord"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        "cfr": make_video(root / "cfr.mp4", seconds=2.0, seed=1),  # one keyframe: decoded straight through
        "gop": make_video(root / "gop.mp4", seconds=3.0, seed=2, gop=10),  # many keyframes: seeks
        "vfr": make_video(root / "vfr.mp4", seconds=2.5, seed=3, vfr=True, gop=12),
        "rot90": make_video(root / "rot90.mp4", width=320, height=240, rotate=90, seed=4, gop=12),
        "rot270": make_video(root / "rot270.mov", width=320, height=240, rotate=270, seed=5),
        "mkv": make_video(root / "h264.mkv", seconds=2.0, seed=6, gop=8),
        "vp9": make_video(root / "vp9.webm", seconds=1.0, seed=7, codec="libvpx-vp9", gop=6),
        "short": make_video(root / "short.mp4", seconds=2 / 24, fps=24, seed=8),
        "ts": make_video(root / "h264.ts", seconds=2.0, seed=9, gop=12),  # no index: seeks are estimates
        "raw": make_video(root / "raw.h264", seconds=2.0, seed=10, gop=12),  # no timestamps at all
        "avi": make_video(root / "mpeg4.avi", seconds=2.0, seed=13, codec="mpeg4", gop=12),
    }


def straight_decode(path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame in output order, upright, and its time from the first: the reference for exactness."""
    frames, times = [], []
    with av.open(str(path)) as container:
        rate = container.streams.video[0].guessed_rate
        for frame in container.decode(video=0):
            picture = frame.to_ndarray(format="rgb24")
            frames.append(np.ascontiguousarray(np.rot90(picture, k=frame.rotation // 90)))
            times.append(frame.time if frame.time is not None else len(times) / rate)  # raw streams: none
    return frames, [float(t - times[0]) for t in times]


# -- sampling -----------------------------------------------------------------------------------------

def test_sample_positions_follow_open_sora():
    assert sample_positions(1) == [0.5]
    assert sample_positions(2) == [0.25, 0.75]
    assert sample_positions(3) == [0.1, 0.5, 0.9]
    assert sample_positions(4) == [0.125, 0.375, 0.625, 0.875]
    assert sample_positions(8) == pytest.approx([(i + 0.5) / 8 for i in range(8)])
    with pytest.raises(ValueError):
        sample_positions(0)


def test_sample_indices_distinct_in_range_and_too_few_is_an_error():
    assert sample_indices(3, 30) == [3, 15, 27]  # 0.1 * 30 is 3, not 2 through binary rounding
    assert sample_indices(3, 3) == [0, 1, 2]
    for k in range(1, 17):
        for n in range(k, 200):
            indices = sample_indices(k, n)
            assert len(set(indices)) == k and indices == sorted(indices) and 0 <= indices[0] and indices[-1] < n
    with pytest.raises(FrameError) as info:
        sample_indices(3, 2)
    assert info.value.reason == "too few frames: 2 < 3" == str(info.value)


def test_resized_size_truncates_the_long_side_like_torchvision():
    assert resized_size(1280, 720, 336) == (597, 336)
    assert resized_size(720, 1280, 336) == (336, 597)
    assert resized_size(500, 500, 336) == (336, 336)
    assert resized_size(320, 240, 480) == (640, 480)  # upscales too: the short side is always S


def test_frame_error_is_one_short_line():
    error = FrameError("truncated or corrupt:\n  frame 3\tdamaged")
    assert error.reason == "truncated or corrupt: frame 3 damaged" == str(error)


# -- exactness ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["cfr", "gop", "vfr", "rot90", "rot270", "mkv", "vp9", "avi", "ts", "raw"])
def test_frames_are_exactly_frame_i_of_a_straight_decode(media, name, backend):
    reference, times = straight_decode(media[name])
    for k in (1, 2, 3, 5, 8):
        result = read_frames(str(media[name]), k, backend=backend)
        exact_with_decord = name not in ("ts", "raw")  # decord gave neighbouring frames there: PyAV reads
        assert isinstance(result, FrameSet) and result.is_video
        assert result.backend == (backend if exact_with_decord else "pyav")
        assert result.frame_count == len(reference)
        assert result.indices == sample_indices(k, len(reference))
        for index, frame in zip(result.indices, result.frames):
            assert frame.dtype == np.uint8 and frame.flags.c_contiguous
            assert np.array_equal(frame, reference[index]), f"{name} {backend} k={k}: frame {index} differs"
            assert frame_signature(frame)[1] == index
        assert result.timestamps == pytest.approx([times[i] for i in result.indices], abs=1e-3)


@pytest.mark.parametrize("name,k,intervals", [
    ("cfr", 3, 1),  # one keyframe interval: rewind once after the packet scan, then decode straight through
    ("cfr", 8, 1),
    ("gop", 3, 3),  # frames 7, 36, 64 lie in the intervals starting at 0, 30 and 60
    ("gop", 8, 7),  # 4, 13, 22, 31, 40, 49, 58, 67: 40 and 49 share the interval starting at 40
    ("gop", 16, 7),  # two or three targets per interval
])
def test_seeks_only_past_a_new_keyframe(media, monkeypatch, name, k, intervals):
    """At most one seek per keyframe interval holding targets, fewer where the decoder has already read
    past the next keyframe (B-frame reordering makes it read ahead to output an interval's last frame)."""
    from vidcap.frames import pyav_reader

    calls = []
    original = pyav_reader._Reader._seek
    monkeypatch.setattr(pyav_reader._Reader, "_seek",
                        lambda self, start: calls.append(start.pos) or original(self, start))
    read_frames(str(media[name]), k)
    assert calls[0] <= 10 and calls == sorted(set(calls))  # forward only, never the same interval twice
    assert len(calls) <= intervals
    if k == 3:
        assert len(calls) == intervals


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_metadata_is_applied(media, backend):
    for name, seed, degrees in (("rot90", 4, 90), ("rot270", 5, 270)):
        result = read_frames(str(media[name]), 3, backend=backend)
        assert result.frames[0].shape == (240, 320, 3)  # displayed landscape; stored 240 wide, 320 high
        assert [frame_signature(f) for f in result.frames] == [(seed, i) for i in result.indices]
        assert (result.width, result.height) == (320, 240)
        assert result.rotation == (degrees if backend == "pyav" else None)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", BACKENDS)
def test_720p_h264(tmp_path_factory, backend):
    path = tmp_path_factory.getbasetemp() / "hd.mp4"
    if not path.exists():
        make_video(path, seconds=1.0, fps=30, width=1280, height=720, gop=10, seed=11)
    reference, _ = straight_decode(path)
    result = read_frames(str(path), 3, backend=backend)
    assert result.indices == [3, 15, 27]
    for index, frame in zip(result.indices, result.frames):
        assert frame.shape == (720, 1280, 3) and np.array_equal(frame, reference[index])
    resized = read_frames(str(path), 3, resize=336, backend=backend)
    assert [f.shape for f in resized.frames] == [(336, 597, 3)] * 3
    assert [frame_signature(f) for f in resized.frames] == [(11, i) for i in (3, 15, 27)]


def test_av1_decodes_with_pyav_and_is_a_clear_error_with_decord(tmp_path):
    scheduling = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        path = make_video(tmp_path / "av1.mkv", seconds=1.0, seed=12, codec="libsvtav1", gop=8)
    except (av.FFmpegError, ValueError) as exc:  # no AV1 encoder in this FFmpeg build
        pytest.skip(f"cannot encode AV1 here: {exc}")
    # SVT-AV1 run as root makes the encoding thread SCHED_FIFO 99: every later test, and every process it
    # starts, would run real-time
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == scheduling
    reference, _ = straight_decode(path)
    result = read_frames(str(path), 3)
    assert all(np.array_equal(f, reference[i]) for i, f in zip(result.indices, result.frames))
    with pytest.raises(FrameError, match="codec not supported by decord: av1"):
        read_frames(str(path), 3, backend="decord")


@pytest.mark.parametrize("backend", BACKENDS)
def test_fewer_frames_than_asked_is_an_error_not_a_repeat(media, backend):
    assert read_frames(str(media["short"]), 2, backend=backend).indices == [0, 1]
    with pytest.raises(FrameError, match=r"^too few frames: 2 < 3$"):
        read_frames(str(media["short"]), 3, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_keeps_aspect_and_content(media, backend):
    result = read_frames(str(media["rot90"]), 3, resize=120, backend=backend)
    assert [f.shape for f in result.frames] == [(120, 160, 3)] * 3
    assert [frame_signature(f) for f in result.frames] == [(4, i) for i in result.indices]
    assert (result.width, result.height) == (320, 240)  # the source size stays on record


def test_bad_arguments_are_value_errors(media):
    with pytest.raises(ValueError):
        read_frames(str(media["cfr"]), 0)
    with pytest.raises(ValueError):
        read_frames(str(media["cfr"]), 3, backend="opencv")
    with pytest.raises(ValueError):
        read_frames(str(media["cfr"]), 3, resize=0)


# -- images, told by content --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "bmp"])
def test_image_is_one_frame_whatever_k(tmp_path, suffix):
    path = make_image(tmp_path / f"i.{suffix}", width=300, height=200, seed=21)
    for backend in BACKENDS:
        result = read_frames(str(path), 8, backend=backend)
        assert not result.is_video and result.backend == "image"
        assert result.indices == [0] and result.timestamps == [0.0] and len(result.frames) == 1
        assert result.frames[0].shape == (200, 300, 3) and frame_signature(result.frames[0]) == (21, 0)
    assert read_frames(str(path), 3, resize=100).frames[0].shape == (100, 150, 3)


def test_kind_comes_from_content_not_extension(tmp_path, media):
    image_as_mp4 = make_image(tmp_path / "really-a.png", seed=22).rename(tmp_path / "really-a-png.mp4")
    assert sniff(str(image_as_mp4)) == "image"
    assert not read_frames(str(image_as_mp4), 3).is_video
    video_as_jpg = tmp_path / "really-a-video.jpg"
    video_as_jpg.write_bytes(media["cfr"].read_bytes())
    assert sniff(str(video_as_jpg)) == "video"
    assert read_frames(str(video_as_jpg), 3).is_video
    text_as_png = tmp_path / "text.png"
    text_as_png.write_text("hello")
    with pytest.raises(FrameError, match="^not a video$"):
        read_frames(str(text_as_png), 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", ["gif", "webp", "png"])
def test_animated_image_is_a_video(tmp_path, suffix, backend):
    from vidcap.fixtures.synth import draw_frame

    path = tmp_path / f"anim.{suffix}"
    pictures = [Image.fromarray(draw_frame(120, 160, 23, i)) for i in range(6)]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100, loop=0, lossless=True)
    result = read_frames(str(path), 3, backend=backend)
    assert result.is_video and result.frame_count == 6 and result.indices == [0, 3, 5]
    assert result.timestamps == pytest.approx([0.0, 0.3, 0.5])
    assert [frame_signature(f) for f in result.frames] == [(23, 0), (23, 3), (23, 5)]
    with pytest.raises(FrameError, match="^too few frames: 6 < 8$"):
        read_frames(str(path), 8, backend=backend)


def test_image_transparency_and_exif_orientation(tmp_path):
    rgba = np.zeros((10, 20, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert (read_frames(str(tmp_path / "clear.png"), 1).frames[0] == 255).all()  # white, not black

    from vidcap.fixtures.synth import draw_frame

    upright = draw_frame(120, 160, 24, 0)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))  # turned left, as a camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    frame = read_frames(str(tmp_path / "phone.jpg"), 1).frames[0]
    assert frame.shape == (120, 160, 3) and frame_signature(frame) == (24, 0)


# -- errors, not guesses ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,reason", [
    ("missing", "^missing file$"),
    ("empty", "^empty file$"),
    ("text", "^not a video$"),
    ("audio_only", "^no video stream$"),
    ("truncated", "^truncated or corrupt: "),
    ("corrupt_middle", "^truncated or corrupt: "),
])
def test_broken_files_are_frame_errors(tmp_path, kind, reason, backend):
    path = make_broken(tmp_path / f"{kind}.mp4", kind)
    with pytest.raises(FrameError, match=reason) as info:
        read_frames(str(path), 3, backend=backend)
    assert "\n" not in info.value.reason and len(info.value.reason) < 200


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_without_index_is_corrupt_not_not_a_video(tmp_path, media, backend):
    data = media["gop"].read_bytes()  # index (moov) at the end: cutting the tail removes it
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameError, match="^truncated or corrupt"):
        read_frames(str(path), 3, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mkv", "vp9"])
def test_truncated_matroska_is_caught_by_its_declared_duration(tmp_path, media, name, backend):
    """Matroska has no frame count in its header: a cut file would otherwise sample the wrong places."""
    data = media[name].read_bytes()
    path = tmp_path / f"cut{media[name].suffix}"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(FrameError, match=r"^truncated or corrupt: frames cover [\d.]+ s of [\d.]+ s$"):
        read_frames(str(path), 3, backend=backend)


def damage(source, destination, frame_index: int, *, keep: float = 0.0) -> None:
    """Copy a video with the packet of frame `frame_index` overwritten by random bytes after its first
    `keep` fraction (and at least its first 8 bytes: length and NAL header)."""
    with av.open(str(source)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    shown = sorted(p.pts for p in packets)
    packet = next(p for p in packets if shown.index(p.pts) == frame_index)
    start = packet.pos + max(8, int(packet.size * keep))
    stop = packet.pos + packet.size
    data = bytearray(source.read_bytes())
    data[start:stop] = np.random.default_rng(0).integers(0, 256, stop - start, np.uint8).tobytes()
    destination.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_keyframe_fails_its_interval_only(tmp_path, media, backend):
    """Garbage in the keyframe of frames 30-39 fails the frames that depend on it, and only those."""
    reference, _ = straight_decode(media["gop"])  # 72 frames, a keyframe every 10
    path = tmp_path / "hole.mp4"
    damage(media["gop"], path, 30)
    with pytest.raises(FrameError, match="^truncated or corrupt: "):
        read_frames(str(path), 1, backend=backend)  # 0.5 * 72 = 36, in the damaged interval
    with pytest.raises(FrameError, match="^truncated or corrupt: "):
        read_frames(str(path), 3, backend=backend)  # 7, 36, 64: one bad frame fails the video
    result = read_frames(str(path), 2, backend=backend)  # 18 and 54, in intact intervals
    assert result.indices == [18, 54]
    assert all(np.array_equal(f, reference[i]) for i, f in zip(result.indices, result.frames))


def test_decode_error_earlier_in_the_interval_fails_the_target(tmp_path, media):
    """Frame 35 fails to decode; frame 36 decodes from it without complaint but is wrong: refused."""
    path = tmp_path / "p-frame.mp4"
    damage(media["gop"], path, 35, keep=0.3)
    with pytest.raises(FrameError, match="^truncated or corrupt: frame 36 damaged$"):
        read_frames(str(path), 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resolution_limit(media, tmp_path, backend):
    with pytest.raises(FrameError, match=r"^resolution over limit: 320x240 > 10000 pixels$"):
        read_frames(str(media["cfr"]), 3, backend=backend, max_pixels=10_000)
    image = make_image(tmp_path / "big.png", width=200, height=100)
    with pytest.raises(FrameError, match="^resolution over limit"):
        read_frames(str(image), 1, backend=backend, max_pixels=10_000)
    assert read_frames(str(media["cfr"]), 1, backend=backend, max_pixels=None).frames


def test_directory_is_not_a_regular_file(tmp_path):
    with pytest.raises(FrameError, match="^not a regular file$"):
        read_frames(str(tmp_path), 3)
