"""`vidcap gallery`: the static review folder, opened from disk in a real headless Chromium.

Thumbnails are checked against the frames the model saw: the synthetic clips carry their seed and frame
index in every frame (vidcap.fixtures.synth), so thumbnail i of clip s must read back as (s, index of the run's
i-th sampled frame).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from browser import chromium, console_errors, save_screenshot, wait_for  # noqa: F401  (fixture)
from page_fixtures import BROKEN, CLIP_FRAMES, CLIPS, FRAMES, api_run, chunk_rows, meta  # noqa: F401
from PIL import Image

from vidcap.cli import main
from vidcap.frames import sample_indices
from vidcap.gallery.thumbs import thumb_name
from vidcap.fixtures.synth import frame_signature, make_video

READY = "document.body.dataset.ready === '1'"


def By_Select():  # noqa: N802 - selenium is imported only by tests that have a browser (the fixture skips first)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    return By, Select


def open_page(driver, folder: Path, hash_: str = "") -> None:  # noqa: ANN001
    driver.get("about:blank")  # a new document: a hash change alone would not reload the page
    driver.get(folder.joinpath("index.html").as_uri() + hash_)
    wait_for(driver, READY)


def cards(driver) -> list[dict]:  # noqa: ANN001
    """What each card on the page shows."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#cards .card')).map(c => ({
          key: c.dataset.key, status: c.dataset.status,
          reason: (c.querySelector('.reason') || {}).textContent || '',
          framesError: (c.querySelector('.frames-error') || {}).textContent || '',
          caption: (c.querySelector('.caption') || {}).textContent || '',
          images: Array.from(c.querySelectorAll('img')).map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
          chips: Array.from(c.querySelectorAll('.chip')).map(x => x.textContent)}));""")


def rerender(driver, action) -> None:  # noqa: ANN001
    """Do something that re-renders the cards, and wait for the new render to finish loading."""
    before = int(driver.execute_script("return document.body.dataset.renders || '0'"))
    action()
    wait_for(driver, f"{READY} && Number(document.body.dataset.renders) > {before}")


def merged(output: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(output, encoding="utf-8")))


@pytest.mark.timeout(240)
def test_gallery_of_a_run_pages_filters_and_shows_the_frames_the_model_saw(api_run, tmp_path, chromium, capsys):
    By, Select = By_Select()
    out = tmp_path / "gallery"
    assert main(["gallery", str(api_run["run"]), "--out", str(out), "--chunk-rows", "4", "--page-size", "5",
                 "--thumb-height", "48", "--readers", "2", "--no-progress"]) == 0
    assert "14 rows (14 videos read, 3 unreadable, 33 thumbnails, 4 chunks)" in capsys.readouterr().out
    expected = merged(api_run["output"])
    assert [r["k"] for r in chunk_rows(out)] == [r["path"] for r in expected]

    # the thumbnails are the run's own sampling (3 frames at 0.1/0.5/0.9 of 6), shrunk to 48 px high
    indices = sample_indices(FRAMES, CLIP_FRAMES)
    for seed in range(CLIPS):
        stem = thumb_name(str(api_run["videos"] / f"clip_{seed:03d}.mp4"))
        files = sorted((out / "thumbs").glob(f"{stem}-*.jpg"))
        if seed in BROKEN:
            assert files == []
            continue
        assert len(files) == FRAMES
        for i, file in enumerate(sorted(files)):
            image = Image.open(file)
            assert image.size == (72, 48)  # 96x64 resized by the run to short side 64, then to 48 high
            assert frame_signature(np.asarray(image.convert("RGB"))) == (seed, indices[i])

    open_page(chromium, out)
    shown = cards(chromium)
    assert [c["key"] for c in shown] == [f"clip_{i:03d}.mp4" for i in range(5)]
    assert chromium.find_element(By.ID, "pageinfo").text == "rows 1–5 of 14"
    for card, row in zip(shown, expected):
        if row["status"] == "ok":
            assert len(card["images"]) == FRAMES and all(ok and w == 72 and h == 48 for ok, w, h in card["images"])
            assert f"seed {int(row['seed'])} frame" in card["caption"] and card["caption"] == row["text"]
        else:  # clip 3: truncated; its error shows, and no image at all (not a broken one)
            assert card["images"] == [] and card["reason"] == f"error: {row['error']}"
            assert "could not be read" in card["framesError"]

    # paging walks the rows in manifest order, across chunk boundaries, and stops at the end
    rerender(chromium, lambda: chromium.find_element(By.ID, "next").click())
    assert [c["key"] for c in cards(chromium)] == [f"clip_{i:03d}.mp4" for i in range(5, 10)]
    rerender(chromium, lambda: chromium.find_element(By.ID, "next").click())
    assert [c["key"] for c in cards(chromium)] == [f"clip_{i:03d}.mp4" for i in range(10, 14)]
    assert chromium.find_element(By.ID, "next").get_attribute("disabled") == "true"
    assert chromium.find_element(By.ID, "pageinfo").text == "rows 11–14 of 14"

    # the status filter shows the error rows only, each with its reason, from page 1 again
    rerender(chromium, lambda: Select(chromium.find_element(By.ID, "status")).select_by_value("error"))
    errors = cards(chromium)
    want = {r["path"]: r["error"] for r in expected if r["status"] == "error"}
    assert [c["key"] for c in errors] == [f"clip_{i:03d}.mp4" for i in sorted(BROKEN)]
    assert {c["key"]: c["reason"] for c in errors} == {k: f"error: {v}" for k, v in want.items()}
    assert set(want.values()) == {"truncated or corrupt: 29 of 48 frames present", "no video stream", "not a video"}
    assert all(c["images"] == [] for c in errors)
    assert chromium.find_element(By.ID, "pageinfo").text == "rows 1–3 of 3"
    assert chromium.find_element(By.ID, "next").get_attribute("disabled") == "true"

    # search (with the filter cleared) finds a caption's text
    rerender(chromium, lambda: Select(chromium.find_element(By.ID, "status")).select_by_value(""))
    box = chromium.find_element(By.ID, "search")
    rerender(chromium, lambda: box.send_keys("seed 12 frame"))
    assert [c["key"] for c in cards(chromium)] == ["clip_012.mp4"]

    # every column on demand
    first = chromium.find_element(By.CSS_SELECTOR, "#cards .card details summary")
    first.click()
    table = chromium.find_element(By.CSS_SELECTOR, "#cards .card details table").text
    assert "cost_usd" in table and "generated_tokens" in table and "seed" in table

    rerender(chromium, lambda: (box.clear(), box.send_keys(" ")))
    shot = save_screenshot(chromium, "gallery.png")
    assert shot.stat().st_size > 10_000
    assert console_errors(chromium) == []


@pytest.mark.timeout(240)
def test_gallery_pages_jump_straight_to_the_chunks_that_hold_a_page(tmp_path, chromium):
    """1,000 rows in 20 chunks of 50; errors are rare. Opening page 2 of the errors loads only the chunks
    that hold errors 49..96 (the per-chunk counts in meta.js say where they are), and shows exactly them."""
    By, Select = By_Select()
    videos = tmp_path  # the output's paths are relative to its folder
    for seed in range(3):
        make_video(videos / f"clip_{seed}.mp4", seconds=0.5, fps=12, width=96, height=64, seed=seed)
    rows = []
    for i in range(1000):
        error = i % 7 == 3
        rows.append({"id": f"row{i:04d}", "path": f"clip_{i % 3}.mp4", "status": "error" if error else "ok",
                     "error": f"reason {i}" if error else "", "text": "" if error else f"caption number {i}"})
    output = tmp_path / "out.csv"
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "g"
    assert main(["gallery", str(output), "--key", "id", "--out", str(out), "--chunk-rows", "50",
                 "--page-size", "48", "--num-frames", "2", "--resize", "0", "--no-progress"]) == 0
    assert len(list((out / "thumbs").rglob("*.jpg"))) == 6  # 3 distinct videos, read once each
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 143

    open_page(chromium, out, "#status=error&page=2")
    page = cards(chromium)
    assert [c["key"] for c in page] == [r["id"] for r in errors[48:96]]
    assert all(c["reason"] == f"error: reason {int(c['key'][3:])}" for c in page)
    holding = sorted({rows.index(r) // 50 for r in errors[48:96]})
    assert chromium.execute_script("return window.VG_LOADED") == holding
    assert chromium.find_element(By.ID, "pageinfo").text == "rows 49–96 of 143"

    # a search has no counts to jump with: it scans, and still pages exactly
    open_page(chromium, out, "#q=caption%20number%2099&page=1")
    assert [c["key"] for c in cards(chromium)] == ["row0099"] + [f"row{i:04d}" for i in range(990, 1000) if i % 7 != 3]
    assert console_errors(chromium) == []


@pytest.mark.timeout(240)
def test_gallery_of_an_output_file_shows_labels_and_tags_and_an_unreadable_video(tmp_path, chromium, capsys):
    By, Select = By_Select()
    videos = tmp_path  # the output's paths are relative to its folder
    for seed in range(4):
        make_video(videos / f"clip_{seed}.mp4", seconds=1.0, fps=10, width=240, height=160, seed=seed)
    rows = [
        {"path": "clip_0.mp4", "text": "a dog runs", "status": "ok", "error": "", "cmotion": "pan_left",
         "objects": "dog, ball", "actions": "running"},
        {"path": "clip_1.mp4", "text": "a cat sits", "status": "ok", "error": "", "cmotion": "static",
         "objects": "cat", "actions": "sitting"},
        {"path": "clip_2.mp4", "text": "two dogs", "status": "ok", "error": "", "cmotion": "pan_left",
         "objects": "dog", "actions": ""},
        {"path": "gone.mp4", "text": "was here once", "status": "ok", "error": "", "cmotion": "zoom_in",
         "objects": "car", "actions": "driving"},
        {"path": "clip_3.mp4", "text": "", "status": "error", "error": "refused: content policy", "cmotion": "",
         "objects": "", "actions": ""},
    ]
    output = tmp_path / "tagged.csv"
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "g"
    assert main(["gallery", str(output), "--out", str(out), "--num-frames", "4", "--resize", "0",
                 "--no-progress"]) == 0
    info = meta(out)
    assert info["labelColumns"] == ["cmotion"] and info["tagColumns"] == ["objects", "actions"]
    assert "4 frame(s) per video, full size" in info["plan"]

    open_page(chromium, out)
    shown = {c["key"]: c for c in cards(chromium)}
    assert len(shown) == 5
    assert all(len(shown[f"clip_{i}.mp4"]["images"]) == 4 for i in range(4))
    assert all(w == 168 and h == 112 for c in shown.values() for _, w, h in c["images"])  # 240x160 -> 112 high
    assert shown["clip_0.mp4"]["chips"] == ["pan_left", "objects dog", "objects ball", "actions running"]
    gone = shown["gone.mp4"]  # an ok row whose file has gone since: its reason, not a broken image
    assert gone["images"] == [] and gone["framesError"] == "no frames to show: missing file"
    assert shown["clip_3.mp4"]["reason"] == "error: refused: content policy"

    rerender(chromium, lambda: Select(chromium.find_element(By.ID, "tag")).select_by_visible_text("dog (2)"))
    assert [c["key"] for c in cards(chromium)] == ["clip_0.mp4", "clip_2.mp4"]
    rerender(chromium, lambda: Select(chromium.find_element(By.ID, "label")).select_by_value("pan_left"))
    assert [c["key"] for c in cards(chromium)] == ["clip_0.mp4", "clip_2.mp4"]
    rerender(chromium, lambda: Select(chromium.find_element(By.ID, "tag")).select_by_visible_text("ball (1)"))
    assert [c["key"] for c in cards(chromium)] == ["clip_0.mp4"]
    assert chromium.find_element(By.ID, "pageinfo").text == "rows 1–1 of 1"
    save_screenshot(chromium, "gallery-tags.png")
    assert console_errors(chromium) == []


def test_where_and_sample_choose_rows_and_bad_options_are_one_line_errors(api_run, tmp_path, capsys):
    out = tmp_path / "errors"
    assert main(["gallery", str(api_run["run"]), "--out", str(out), "--where", "status=error", "--no-progress"]) == 0
    assert [r["k"] for r in chunk_rows(out)] == [f"clip_{i:03d}.mp4" for i in sorted(BROKEN)]
    assert meta(out)["matched"] == 3 and meta(out)["total"] == CLIPS

    picks = []
    for seed in (1, 1, 2):
        folder = tmp_path / f"sample{len(picks)}"
        assert main(["gallery", str(api_run["output"]), "--out", str(folder), "--sample", "4", "--seed", str(seed),
                     "--where", "status!=error", "--no-progress"]) == 0
        picks.append([r["k"] for r in chunk_rows(folder)])
        assert all(r["s"] == "ok" for r in chunk_rows(folder))
        assert "the run's caption task" in meta(folder)["plan"]  # captions.csv: its run found beside it
    assert len(picks[0]) == 4 and picks[0] == picks[1] and picks[0] != picks[2]
    assert picks[0] == sorted(picks[0])  # source order kept

    # a rebuild replaces the gallery; a folder that is not one is refused
    assert main(["gallery", str(api_run["run"]), "--out", str(out), "--no-progress"]) == 0
    assert len(chunk_rows(out)) == CLIPS
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for argv, message in [
        (["--out", str(tmp_path / "mine")], "is not a vidcap gallery"),
        (["--out", str(tmp_path / "x"), "--where", "colour=red"], "--where 'colour=red': no column 'colour'"),
        (["--out", str(tmp_path / "x"), "--where", "status"], "expected COLUMN=VALUE"),
        (["--out", str(tmp_path / "x"), "--sample", "0"], "--sample must be at least 1"),
    ]:
        assert main(["gallery", str(api_run["run"]), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vidcap gallery: error: ") and message in err, err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["gallery", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert "no such run folder or output file" in capsys.readouterr().err
