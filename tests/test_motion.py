"""Camera motion: the label formula, the estimator on clips of known motion, broken files, relabel."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.cli import main
from vidcap.errors import UserError
from vidcap.frames import FrameError, read_frames, span_indices
from vidcap.motion import CATEGORIES, MotionSettings, estimate_motion, measure_video, motion_label
from vidcap.motion.labels import label_parts
from vidcap.motion.relabel import relabel_file
from vidcap.fixtures.motion_clips import ClipSpec, clip_set, render, write_clip

# ---------------------------------------------------------------- the formula


@pytest.mark.parametrize("dx, dy, zoom, label", [
    (0.0, 0.0, 1.0, "static"),
    (-0.3, 0.0, 1.0, "pan_right"),  # content moves left: the camera pans right
    (0.3, 0.0, 1.0, "pan_left"),
    (0.0, 0.3, 1.0, "tilt_up"),  # content moves down: tilt up
    (0.0, -0.3, 1.0, "tilt_down"),
    (0.0, 0.0, 1.6, "zoom_in"),  # content grows: zoom in
    (0.0, 0.0, 1 / 1.6, "zoom_out"),
    (0.3, 0.3, 1.6, "pan_left+tilt_up+zoom_in"),
    (-0.3, -0.3, 0.5, "pan_right+tilt_down+zoom_out"),
    (0.3, 0.0, 0.5, "pan_left+zoom_out"),
    (0.25, -0.25, 1.5, "static"),  # exactly at the threshold is not past it
    (None, 0.0, 1.0, "unclassified"),
    (math.nan, 0.0, 1.0, "unclassified"),
])
def test_label_formula(dx, dy, zoom, label):
    assert motion_label(dx, dy, zoom) == label


def test_threshold_moves_the_boundary_and_zoom_is_symmetric():
    assert motion_label(0.15, 0.0, 1.0, threshold=0.1) == "pan_left"
    assert motion_label(0.15, 0.0, 1.0, threshold=0.2) == "static"
    # a zoom in by s and out by 1/s pass the same thresholds (the clip played backwards)
    for t in (0.05, 0.1, 0.2, 0.3):
        for s in (1.1, 1.3, 1.7):
            assert (motion_label(0, 0, s, t) == "zoom_in") == (motion_label(0, 0, 1 / s, t) == "zoom_out")
    with pytest.raises(ValueError):
        motion_label(0, 0, 1, threshold=0)


def test_every_label_is_made_of_the_categories_in_a_fixed_order():
    order = {"pan_right": 0, "pan_left": 0, "tilt_up": 1, "tilt_down": 1, "zoom_in": 2, "zoom_out": 2}
    seen = set()
    for dx in (-0.5, 0.0, 0.5):
        for dy in (-0.5, 0.0, 0.5):
            for zoom in (0.5, 1.0, 2.0):
                label = motion_label(dx, dy, zoom)
                parts = label_parts(label)
                assert all(p in CATEGORIES for p in parts)
                if len(parts) > 1:
                    assert [order[p] for p in parts] == sorted({order[p] for p in parts})
                seen.add(label)
    assert len(seen) == 27  # every combination, each spelled one way


# ---------------------------------------------------------------- frame plan


def test_span_plan_takes_first_to_last(tmp_path):
    assert span_indices(5, 9) == [0, 2, 4, 6, 8]
    assert span_indices(13, 4) == [0, 1, 2, 3]  # fewer frames than asked: all of them, no repeats
    path = write_clip(ClipSpec(name="plan", width=128, height=96, frames=30), tmp_path / "plan.mp4")
    frames = read_frames(str(path), 13, plan="span")
    assert frames.indices[0] == 0 and frames.indices[-1] == 29 and len(set(frames.indices)) == 13
    assert read_frames(str(path), 3).indices == [3, 15, 27]  # the default plan is unchanged
    pytest.importorskip("decord")
    other = read_frames(str(path), 13, plan="span", backend="decord")
    assert other.indices == frames.indices and other.backend == "decord"
    with pytest.raises(ValueError):
        read_frames(str(path), 3, plan="random")


# ---------------------------------------------------------------- the estimator on known motion


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Two rounds of every kind of generated clip (34 clips, 192x108 or 108x192, 30 frames), measured."""
    folder = tmp_path_factory.mktemp("motion-clips")
    specs = clip_set(34, seed=11, size=(192, 108), frames=30)
    return [(spec, measure_video(str(write_clip(spec, folder / f"{spec.name}.mp4")))) for spec in specs]


def test_accuracy_per_label_on_known_motion(measured):
    by_category = defaultdict(list)
    for spec, motion in measured:
        for category in label_parts(spec.label):
            by_category[category].append(motion.label == spec.label)
    assert set(by_category) == set(CATEGORIES), "the set must cover every label"
    wrong = [(s.name, s.label, m.label, m.reason) for s, m in measured if m.label != s.label]
    for category, hits in by_category.items():
        assert sum(hits) / len(hits) >= 0.9, (category, wrong)
    assert sum(m.label == s.label for s, m in measured) / len(measured) >= 0.95, wrong


def test_no_still_camera_is_called_moving(measured):
    still = [(s, m) for s, m in measured if s.still]
    assert len(still) >= 8 and any(s.objects for s, _ in still)
    assert [(s.name, m.label) for s, m in still if m.label not in ("static", "unclassified")] == []


def test_numbers_match_the_true_motion(measured):
    for spec, motion in measured:
        if motion.dx is None:
            assert motion.label == "unclassified" and motion.reason
            continue
        assert motion.dx == pytest.approx(spec.dx, abs=0.03), spec.name
        assert motion.dy == pytest.approx(spec.dy, abs=0.03), spec.name
        assert motion.zoom == pytest.approx(spec.zoom, rel=0.04), spec.name
        assert motion.points >= 12 and 0 < motion.confidence <= 1


def test_unclassified_says_why(measured):
    reasons = {s.name.split("-", 1)[1]: m.reason for s, m in measured if s.label == "unclassified"}
    assert reasons["tiny"].startswith("too few frames")
    assert reasons["black"].startswith("blank frame")
    assert reasons["cut"].startswith(("scene cut", "too few points"))


def test_relabel_of_the_numbers_is_the_label_at_that_threshold(measured):
    for spec, motion in measured:
        assert motion.relabel(0.25) == motion.label
        if motion.dx is not None:
            assert motion.relabel(0.01) != "static" or abs(motion.dx) <= 0.01


def test_label_is_deterministic_and_in_order(tmp_path):
    spec = ClipSpec(name="all3", width=192, height=108, frames=30, scene="texture:5", dx=-0.5, dy=0.45,
                    zoom=1.8, jitter=0.003, noise=3.0)
    path = write_clip(spec, tmp_path / "all3.mp4")
    labels = {measure_video(str(path)).label for _ in range(3)}
    assert labels == {"pan_right+tilt_up+zoom_in"}


def test_fewer_steps_than_min_frames_still_measures_a_long_video():
    frames = list(render(ClipSpec(name="pan", width=192, height=108, frames=40, scene="texture:2", dx=0.6)))
    motion = estimate_motion(frames[::13], MotionSettings(steps=3), frame_count=40)
    assert motion.label == "pan_left"
    assert estimate_motion(frames[:3]).reason == "too few frames: 3 < 5"


# ---------------------------------------------------------------- broken files: errors, not labels


def test_broken_videos_raise_frame_errors(tmp_path):
    good = write_clip(ClipSpec(name="good", width=192, height=108, frames=48, scene="texture:1", dx=0.5),
                      tmp_path / "good.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path, reason in [(truncated, "truncated or corrupt"), (text, "not a video"), (empty, ""),
                         (tmp_path / "missing.mp4", "missing file")]:
        with pytest.raises(FrameError) as caught:
            measure_video(str(path))
        assert reason in caught.value.reason and "\n" not in caught.value.reason
    assert measure_video(str(good)).label == "pan_left"


# ---------------------------------------------------------------- motion-relabel


def _rows():
    return [
        {"path": "a.mp4", "id": "007", "status": "ok", "error": "", "cmotion": "static", "cmotion_dx": "0.2",
         "cmotion_dy": "-0.05", "cmotion_zoom": "1.1", "cmotion_points": "80", "cmotion_confidence": "0.9",
         "cmotion_reason": ""},
        {"path": "b, with comma.mp4", "id": "008", "status": "ok", "error": "", "cmotion": "pan_left+zoom_in",
         "cmotion_dx": "0.4", "cmotion_dy": "0.0", "cmotion_zoom": "1.7", "cmotion_points": "50",
         "cmotion_confidence": "0.7", "cmotion_reason": ""},
        {"path": "c.mp4", "id": "009", "status": "ok", "error": "", "cmotion": "unclassified", "cmotion_dx": "",
         "cmotion_dy": "", "cmotion_zoom": "", "cmotion_points": "0", "cmotion_confidence": "0",
         "cmotion_reason": "scene cut at step 4"},
        {"path": "d.mp4", "id": "010", "status": "error", "error": "truncated or corrupt", "cmotion": "",
         "cmotion_dx": "", "cmotion_dy": "", "cmotion_zoom": "", "cmotion_points": "", "cmotion_confidence": "",
         "cmotion_reason": ""},
    ]


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_relabel_csv_changes_only_cmotion(tmp_path):
    out = tmp_path / "out.csv"
    _write_csv(out, _rows())
    assert main(["motion-relabel", str(out), "--threshold", "0.1"]) == 0
    rows = _read_csv(out)
    assert [r["cmotion"] for r in rows] == ["pan_left", "pan_left+zoom_in", "unclassified", ""]
    for before, after in zip(_rows(), rows):
        assert {k: v for k, v in before.items() if k != "cmotion"} == {k: v for k, v in after.items() if k != "cmotion"}
    relabel_file(out, 0.5)
    assert [r["cmotion"] for r in _read_csv(out)] == ["static", "static", "unclassified", ""]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary left behind


def test_relabel_parquet_keeps_types(tmp_path):
    rows = _rows()
    table = pa.table({
        "path": [r["path"] for r in rows], "id": [r["id"] for r in rows], "status": [r["status"] for r in rows],
        "cmotion": [r["cmotion"] or None for r in rows],
        **{c: pa.array([float(r[c]) if r[c] else None for r in rows], pa.float64())
           for c in ("cmotion_dx", "cmotion_dy", "cmotion_zoom")},
    })
    src, dst = tmp_path / "out.parquet", tmp_path / "new.parquet"
    pq.write_table(table, src)
    counts = relabel_file(src, 0.15, output=dst)
    result = pq.read_table(dst)
    assert result.schema == table.schema
    assert result["cmotion"].to_pylist() == ["pan_left", "pan_left+zoom_in", "unclassified", None]
    assert counts == {"pan_left": 1, "pan_left+zoom_in": 1, "unclassified": 1}
    assert pq.read_table(src).equals(table)  # --to leaves the original alone


def test_relabel_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "out.csv"
    _write_csv(out, [{"path": "a.mp4", "text": "a caption"}])
    assert main(["motion-relabel", str(out), "--threshold", "0.2"]) == 2
    assert "not a motion output" in capsys.readouterr().err
    rows = _rows()
    rows[1]["cmotion_dx"] = "left"
    _write_csv(out, rows)
    with pytest.raises(UserError, match=r"row 2: column 'cmotion_dx': not a number: 'left'"):
        relabel_file(out, 0.2)
    assert _read_csv(out) == rows  # untouched after the failure
    assert main(["motion-relabel", str(out), "--threshold", "-1"]) == 2
