"""`vidcap report`: charts of a run as PNGs in an HTML page; every chart decodes at its stated size, and
the page shows them in a real headless Chromium with a clean console."""

from __future__ import annotations

import csv
import os
import re

import numpy as np
import pytest
from browser import chromium, console_errors, save_screenshot, wait_for  # noqa: F401  (fixture)
from page_fixtures import BROKEN, CLIPS, api_run  # noqa: F401
from PIL import Image

from vidcap.cli import main
from vidcap.manifest.split import load_shard
from vidcap.report.charts import DPI, HEIGHT_IN, WIDTH_IN
from vidcap.report.facts import collect
from vidcap.results import ResultWriter, read_results, result_rows
from vidcap.run import RunDir

SIZE = (int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI))


def check_png(path) -> None:  # noqa: ANN001
    """Decodes fully, has the chart size, and is not a blank canvas."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size == SIZE, (path, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20, f"{path} looks blank"


@pytest.mark.timeout(240)
def test_report_of_an_api_run_draws_every_chart_it_has_data_for(api_run, tmp_path, chromium, capsys):
    out = tmp_path / "report"
    assert main(["report", str(api_run["run"]), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(api_run["output"], encoding="utf-8")))
    flagged = any(r["flags"] for r in rows)  # caption checks (vidcap.checks) get a chart of their own
    expected = ["errors.png", "statuses.png", "throughput.png", "tokens_cost.png"] + (["flags.png"] if flagged else [])
    assert f"{len(expected)} charts" in capsys.readouterr().out
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(expected)
    for name in pngs:
        check_png(out / name)

    run = RunDir.at(api_run["run"])
    facts = collect(run)
    written = sum(read_results(run, i).num_rows for i in range(run.num_shards))
    assert len(facts.times()[0]) == written == CLIPS  # every row has the time the store committed it
    assert facts.status_counts() == {"ok": CLIPS - len(BROKEN), "error": len(BROKEN), "skipped": 0, "pending": 0}
    assert dict(facts.error_reasons()) == {r["error"]: 1 for r in rows if r["status"] == "error"}
    page = (out / "index.html").read_text(encoding="utf-8")
    cost = sum(float(r["cost_usd"] or 0) for r in rows)
    assert cost > 0 and f"${cost:.4f} (every attempt)" in page
    assert f"ok {CLIPS - len(BROKEN)}  error {len(BROKEN)}" in page
    assert "not drawn: tags (no tag columns); motion (no cmotion labels)" in page
    assert sorted(re.findall(r"<img src='([^']+)'", page)) == pngs

    chromium.get((out / "index.html").as_uri())
    wait_for(chromium, "Array.from(document.images).every(i => i.complete)")
    sizes = chromium.execute_script("return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [list(SIZE)] * len(expected)
    save_screenshot(chromium, "report.png")
    assert console_errors(chromium) == []


def test_report_draws_tag_and_motion_distributions(tmp_path, capsys):
    """Rows as the tag and motion tasks write them (list<string> tags, a cmotion label), through the store."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "".join(f"v{i}.mp4\n" for i in range(6)))
    run = RunDir.at(tmp_path / "run")
    assert main(["split", str(manifest), "--run", str(run.root), "--shards", "2"]) == 0
    objects = {"v0.mp4": ["dog", "ball"], "v1.mp4": ["dog"], "v2.mp4": ["cat"], "v3.mp4": [], "v4.mp4": ["dog"]}
    motion = {"v0.mp4": "pan_left", "v1.mp4": "static", "v2.mp4": "static", "v3.mp4": "zoom_in", "v4.mp4": "static"}
    for index in range(2):
        keys = load_shard(run, index)["path"].to_pylist()
        with ResultWriter(run, index) as writer:
            writer.append(result_rows(
                {"key": k, "status": "ok", "objects": objects[k], "cmotion": motion[k]} if k != "v5.mp4" else
                {"key": k, "status": "error", "error": "no video stream"} for k in keys))
    facts = collect(run)
    assert facts.tag_counts() == {"objects": [("dog", 3), ("ball", 1), ("cat", 1)]}
    assert facts.label_counts() == {"cmotion": [("static", 3), ("pan_left", 1), ("zoom_in", 1)]}
    out = tmp_path / "report"
    assert main(["report", str(run.root), "--out", str(out)]) == 0
    for name in ("tags.png", "motion.png", "statuses.png", "errors.png", "throughput.png"):
        check_png(out / name)
    assert not (out / "tokens_cost.png").exists()
    # a rebuild replaces it; a folder that is not a report is refused with one line
    assert main(["report", str(run.root), "--out", str(out)]) == 0
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.txt").write_text("x")
    assert main(["report", str(run.root), "--out", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a vidcap report" in err
    assert np.isfinite(facts.times()[0]).all()


@pytest.mark.timeout(300)
def test_tags_of_a_real_tag_run_in_the_report_and_the_gallery(api_run, tmp_path, chromium, capsys):
    """`vidcap tag` over the captions the run wrote (the test server answers each caption's own words as
    its tags), then a report of the tag run and a gallery of its output: the counts are the known ones."""
    from collections import Counter

    from openai_server import FakeOpenAIServer, tags_for
    from page_fixtures import KEY, meta

    captions = tmp_path / "captions.csv"
    rows = list(csv.DictReader(open(api_run["output"], encoding="utf-8")))
    with open(captions, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "text", "seed"])
        writer.writeheader()
        for row in rows:  # the clips' own paths, so the gallery can show their frames
            writer.writerow({"path": str(api_run["videos"] / row["path"]), "text": row["text"], "seed": row["seed"]})
    output = tmp_path / "tags.parquet"
    os.environ["OPENAI_API_KEY"] = KEY
    try:
        with FakeOpenAIServer(api_key=KEY) as server:
            assert main(["tag", str(captions), "--key", "objects", "--output", str(output), "--engine", "openai",
                         "--model", "gpt-4o", "--api-base", server.base_url, "--shards", "2"]) == 0
    finally:
        os.environ.pop("OPENAI_API_KEY", None)
    expected = Counter(t for r in rows if r["text"].strip() for t in tags_for(r["text"]))
    run = RunDir.at(tmp_path / "tags.run")
    found = dict(collect(run).tag_counts()["objects"])
    assert found == dict(expected)
    out = tmp_path / "report"
    assert main(["report", str(run.root), "--out", str(out)]) == 0
    check_png(out / "tags.png")
    check_png(out / "tokens_cost.png")

    gallery = tmp_path / "gallery"
    assert main(["gallery", str(output), "--out", str(gallery), "--page-size", "20", "--no-progress"]) == 0
    assert meta(gallery)["tagColumns"] == ["objects"]
    top, n = expected.most_common(1)[0]
    chromium.get((gallery / "index.html").as_uri() + "#tag=objects%01" + top)
    wait_for(chromium, "document.body.dataset.ready === '1'")
    keys = chromium.execute_script("return Array.from(document.querySelectorAll('.card')).map(c => c.dataset.key)")
    assert len(keys) == n == sum(1 for r in rows if top in tags_for(r["text"]))
    assert console_errors(chromium) == []
