"""Frames from a video with PyAV: exact on variable frame rate and damaged files, seeking only where it pays.

A first pass reads the packets without decoding them (keyframe flags and timestamps, ~8 ms for 10 s of
720p). Frame i is the packet with the i-th smallest pts, which is what a straight decode outputs as frame
i. The decoder then seeks only when a keyframe lies between where it is and the next target (decoding
straight through a short clip beats seeking), and a target is taken only when a frame with exactly its
pts comes out. So a frame is never guessed: a damaged one (decode error since its keyframe, or flagged
corrupt) or one that never comes out is a FrameError, never a neighbour.

Streams whose packets lack timestamps fall back to a straight decode that counts frames.

Decoding stays on PyAV's slice threading, not frame threading: frame threads report a decode error a few
packets late, which would let a damaged frame pass as intact. Parallelism comes from prefetch workers
reading several videos at once instead. Corruption that still parses as valid H.264 (random bytes inside
a slice) cannot be detected by any decoder: the bitstream has no checksum.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from vidcap.frames.errors import FrameError
from vidcap.frames.frameset import FrameSet
from vidcap.frames.probe import check_complete, check_pixels
from vidcap.frames.sampling import plan_indices
from vidcap.frames.transform import rotate


@dataclass
class _Packet:
    pos: int  # position in decode (file) order among the frames' packets
    pts: int | None
    dts: int | None
    key: bool


class _Fallback(Exception):
    """Timestamps cannot identify frames here: count frames in a straight decode instead."""


def read_pyav(path: str, num_frames: int, *, max_pixels: int | None, looks_like_video: bool,
              plan: str = "even") -> FrameSet:
    """K frames of `path` (by the frame `plan`) at full size and upright; FrameError for anything wrong."""
    try:
        with open_video(path, max_pixels=max_pixels, looks_like_video=looks_like_video) as container:
            stream = container.streams.video[0]
            packets, damaged = _scan(container, stream)
            try:
                return _Reader(container, stream, packets, damaged).read(num_frames, plan)
            except _Fallback:
                pass
        # raw streams cannot seek back: count frames in a fresh pass
        with open_video(path, max_pixels=max_pixels, looks_like_video=looks_like_video) as container:
            return _read_counting(container, container.streams.video[0], len(packets), num_frames, plan)
    except av.FFmpegError as exc:  # a seek or a conversion the file did not allow
        raise FrameError(f"truncated or corrupt: {_why(exc)}") from None


def open_video(path: str, *, max_pixels: int | None, looks_like_video: bool) -> av.container.InputContainer:
    """Open a container that has a video stream within the pixel limit, or raise FrameError.

    FFmpeg picks some demuxers from the extension alone (image2 for *.png, tty for text): when the content
    did not look like media, such a match is a text file with a misleading name, not a video.
    """
    try:
        container = av.open(path, metadata_errors="ignore")
    except FileNotFoundError:
        raise FrameError("missing file") from None
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise FrameError(f"truncated or corrupt: {_why(exc)}" if looks_like_video else "not a video") from None
    try:
        if not looks_like_video and container.format.name in ("image2", "tty"):
            raise FrameError("not a video")
        if not container.streams.video:
            raise FrameError("no video stream")
        context = container.streams.video[0].codec_context
        check_pixels(context.width, context.height, max_pixels)
    except BaseException:
        container.close()
        raise
    return container


@dataclass
class Header:
    """What the container says about its video stream, for a backend that cannot ask (decord)."""

    format: str
    codec: str
    seconds: float | None


def probe_video(path: str, max_pixels: int | None, *, looks_like_video: bool) -> Header:
    """The cheap checks (a video stream, within the pixel limit) and what the header promises."""
    with open_video(path, max_pixels=max_pixels, looks_like_video=looks_like_video) as container:
        stream = container.streams.video[0]
        return Header(container.format.name, stream.codec_context.codec.canonical_name, declared_seconds(stream))


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def _scan(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[list[_Packet], set[int]]:
    """The frames' packets in decode order, and the positions of packets the demuxer marked corrupt."""
    packets: list[_Packet] = []
    damaged: set[int] = set()
    present = last_duration = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            present += 1
            last_duration = packet.duration or 0
            if packet.is_discard:  # before an edit list's start: decoded for reference, never shown
                continue
            if packet.is_corrupt:
                damaged.add(len(packets))
            packets.append(_Packet(len(packets), packet.pts, packet.dts, packet.is_keyframe))
    except av.FFmpegError as exc:
        raise FrameError(f"truncated or corrupt: {_why(exc)} after {present} frames") from None
    if not packets:
        raise FrameError("truncated or corrupt: no video frames")
    check_complete(present, stream.frames, _span_seconds(packets, last_duration, stream), declared_seconds(stream))
    return packets, damaged


def declared_seconds(stream: av.VideoStream) -> float | None:
    """The stream's own duration from the header (a Matroska DURATION tag, or the track's), if any."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _span_seconds(packets: list[_Packet], last_duration: int, stream: av.VideoStream) -> float | None:
    times = [p.pts for p in packets if p.pts is not None]
    if not times or not stream.time_base:
        return None
    return float((max(times) + last_duration - min(times)) * stream.time_base)


class _Reader:
    """Decodes a set of target frames, identified by pts, seeking where a keyframe makes it pay."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream,
                 packets: list[_Packet], damaged: set[int]) -> None:
        if any(p.pts is None for p in packets) or len({p.pts for p in packets}) != len(packets):
            raise _Fallback
        self.container, self.stream, self.packets = container, stream, packets
        self.by_pts = {p.pts: p for p in packets}
        self.shown = sorted(p.pts for p in packets)  # presentation order
        self.keys = [p for p in packets if p.key] or packets[:1]
        self.key_pos = [p.pos for p in self.keys]
        self.errors = set(damaged)  # decode positions where decoding failed or gave a damaged frame
        self.position = -1  # decode position of the last packet sent to the decoder
        self.demux: Iterator[av.Packet] | None = None
        self.pending: av.Packet | None = None  # the packet read to check where a seek landed
        self.out: deque[av.VideoFrame] = deque()  # decoded frames not yet looked at

    def read(self, num_frames: int, plan: str = "even") -> FrameSet:
        indices = plan_indices(plan, num_frames, len(self.shown))
        wanted = {self.shown[i]: i for i in indices}
        found: dict[int, np.ndarray] = {}
        rotation = 0
        for index in indices:
            pts = self.shown[index]
            if pts in found:
                continue
            start = self._start_for(self.by_pts[pts])
            if self.demux is None or start.pos > self.position:
                self._seek(start)
            for frame in self._frames_until(pts):
                if frame.pts in wanted and frame.pts not in found:
                    self._check_intact(frame, wanted[frame.pts])
                    rotation = -frame.rotation
                    found[frame.pts] = rotate(frame.to_ndarray(format="rgb24"), rotation)
            if pts not in found:
                raise FrameError(f"truncated or corrupt: frame {index} could not be decoded")
        frames = [found[self.shown[i]] for i in indices]
        first, base = self.shown[0], self.stream.time_base
        height, width = frames[0].shape[:2]
        return FrameSet(frames=frames, indices=indices,
                        timestamps=[float((self.shown[i] - first) * base) for i in indices], is_video=True,
                        width=width, height=height, rotation=rotation % 360, frame_count=len(self.shown),
                        backend="pyav")

    def _start_for(self, target: _Packet) -> _Packet:
        """The last keyframe from which decoding reaches `target` (an open GOP's leading frame shows before
        its keyframe, so a keyframe shown after the target does not count)."""
        i = bisect.bisect_right(self.key_pos, target.pos) - 1
        while i > 0 and self.keys[i].pts > target.pts:
            i -= 1
        return self.keys[max(i, 0)]

    def _seek(self, start: _Packet) -> None:
        """Seek so that decoding resumes at the keyframe `start` (or an earlier one).

        Demuxers index by pts or by dts, and MP4 shifts dts by the reordering delay, so try `start`'s pts
        first, then its dts (both with the backward flag), then the very first keyframe. Landing after
        `start` would skip the target; landing before it costs only time.
        """
        offsets = [start.pts, start.dts, self.keys[0].dts, self.keys[0].pts]
        for offset in dict.fromkeys(o for o in offsets if o is not None):
            self.container.seek(offset, stream=self.stream, backward=True)
            self.demux = self.container.demux(self.stream)
            self.out.clear()
            self.pending = next(self.demux, None)
            landed = self.by_pts.get(self.pending.pts) if self.pending is not None else None
            if landed is not None and landed.pos <= start.pos and landed.key:
                self.position = landed.pos - 1
                return
        raise _Fallback  # the index cannot bring us back to a keyframe: count frames from the start

    def _frames_until(self, pts: int) -> Iterator[av.VideoFrame]:
        """Decode onward, yielding frames, until the one shown at `pts` (or any later one) has come out."""
        assert self.demux is not None
        while True:
            while self.out:
                frame = self.out.popleft()
                yield frame
                if frame.pts >= pts:
                    return
            packet, self.pending = self.pending, None
            if packet is None:
                packet = next(self.demux, None)
                if packet is None:
                    return
            entry = self.by_pts.get(packet.pts) if packet.size else None
            if entry is not None:
                self.position = entry.pos
            try:
                frames = self.stream.decode(packet)
            except av.FFmpegError:
                self.errors.add(self.position)
                continue
            for frame in frames:
                if frame.pts is None or frame.pts not in self.by_pts:
                    raise _Fallback
                if frame.is_corrupt:
                    self.errors.add(self.by_pts[frame.pts].pos)
            self.out.extend(frames)

    def _check_intact(self, frame: av.VideoFrame, index: int) -> None:
        """FrameError if this frame or anything it may reference since its keyframe failed to decode."""
        pos = self.by_pts[frame.pts].pos
        key = self.key_pos[max(0, bisect.bisect_right(self.key_pos, pos) - 1)]
        if any(key <= e <= pos for e in self.errors):
            raise FrameError(f"truncated or corrupt: frame {index} damaged")


def _read_counting(container: av.container.InputContainer, stream: av.VideoStream, frame_count: int,
                   num_frames: int, plan: str = "even") -> FrameSet:
    """A straight decode from the start, frame i being the i-th frame out (streams without usable pts)."""
    indices = plan_indices(plan, num_frames, frame_count)
    wanted = set(indices)
    found: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    damaged_since_key = False
    rotation = 0
    count = 0
    for packet in container.demux(stream):
        try:
            frames = stream.decode(packet)
        except av.FFmpegError:
            damaged_since_key = True
            continue
        for frame in frames:
            damaged_since_key = (damaged_since_key and not frame.key_frame) or frame.is_corrupt
            if count in wanted:
                if damaged_since_key:
                    raise FrameError(f"truncated or corrupt: frame {count} damaged")
                rotation = -frame.rotation
                found[count] = rotate(frame.to_ndarray(format="rgb24"), rotation)
            if count == 0 or count in wanted:
                times[count] = float(frame.time) if frame.time is not None else count / float(stream.guessed_rate or 1)
            count += 1
        if len(found) == len(indices):
            break
    if len(found) < len(indices):
        raise FrameError(f"truncated or corrupt: {count} of {frame_count} frames decoded")
    frames = [found[i] for i in indices]
    height, width = frames[0].shape[:2]
    return FrameSet(frames=frames, indices=indices, timestamps=[times[i] - times[0] for i in indices],
                    is_video=True, width=width, height=height, rotation=rotation % 360, frame_count=frame_count,
                    backend="pyav")
