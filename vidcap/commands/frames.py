"""`vidcap frames VIDEO`: the frames a run would feed the model, as PNG files, and where they came from."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidcap.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "frames", help="write the K sampled frames of a video (or an image) as PNG files, for inspection",
        description="Read K evenly spaced frames the way a captioning run does, write them as PNG files "
                    "(000.png, 001.png, ... in time order) and print one JSON object with their indices "
                    "and timestamps.")
    parser.add_argument("video", help="video or image file")
    parser.add_argument("--num-frames", "-k", type=int, default=3, metavar="K", help="frames to take (default 3)")
    parser.add_argument("--resize", type=int, default=None, metavar="S",
                        help="resize so the short side is S pixels, keeping the aspect ratio (0: keep, as for "
                             "`vidcap caption --resize 0`)")
    parser.add_argument("--backend", choices=("pyav", "decord"), default="pyav", help="video reader (default pyav)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse sources with more than N pixels per frame (default: 8K, 7680x4320)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for the PNG files (created); without it only the JSON is printed")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from vidcap.frames import DEFAULT_MAX_PIXELS, FrameError, read_frames

    if args.num_frames < 1:
        raise UserError("--num-frames must be at least 1")
    if args.resize is not None and args.resize < 0:
        raise UserError("--resize must be a number of pixels, or 0 to keep the size")
    try:
        result = read_frames(args.video, args.num_frames, resize=args.resize or None, backend=args.backend,
                             max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    except FrameError as exc:
        raise UserError(f"{args.video}: {exc.reason}") from None
    files = _write_pngs(result.frames, args.out) if args.out is not None else []
    height, width = result.frames[0].shape[:2]
    report = {
        "path": args.video, "is_video": result.is_video, "backend": result.backend,
        "indices": result.indices, "timestamps": [round(t, 6) for t in result.timestamps],
        "frame_count": result.frame_count, "source_width": result.width, "source_height": result.height,
        "rotation": result.rotation, "width": width, "height": height, "files": files,
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _write_pngs(frames: list, out: Path) -> list[str]:
    from PIL import Image

    try:
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for number, frame in enumerate(frames):
            path = out / f"{number:03d}.png"
            Image.fromarray(frame).save(path)
            files.append(str(path))
    except OSError as exc:
        raise UserError(f"cannot write frames to {out}: {exc.strerror or exc}") from None
    return files
