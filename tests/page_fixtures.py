"""A small finished run for the gallery and report tests: real clips (three of them broken), captioned
through the OpenAI-compatible engine against the test server (tests/openai_server.py), which names each
video's seed and frames in its caption and reports tokens, so captions differ per row and cost adds up."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from openai_server import FakeOpenAIServer
from worker_helpers import make_clips

from vidcap.cli import main

KEY = "sk-gallery-test-2f9d4c1b7a"
CLIPS = 14
BROKEN = {3: "truncated", 7: "audio_only", 10: "text"}
FRAMES = 3
CLIP_FRAMES = 6  # make_clips: 0.5 s at 12 fps


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"run": run folder, "output": merged CSV, "manifest": manifest CSV, "videos": clip folder}."""
    base = tmp_path_factory.mktemp("pages")
    manifest = make_clips(base / "v", CLIPS, broken=BROKEN)
    output = base / "captions.csv"
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = KEY
    try:
        with FakeOpenAIServer(api_key=KEY, latency_s=0.05) as server:
            code = main(["caption", str(manifest), "--output", str(output), "--rows-per-shard", "5",
                         "--engine", "openai", "--model", "gpt-4o", "--api-base", server.base_url,
                         "--concurrency", "2", "--batch-size", "2", "--num-frames", str(FRAMES), "--resize", "64"])
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old
    assert code == 0
    return {"run": base / "captions.run", "output": output, "manifest": manifest, "videos": base / "v"}


def chunk_rows(gallery: Path) -> list[dict]:
    """Every row the gallery wrote, in order, read back from its data/chunk-*.js files."""
    rows = []
    for path in sorted((gallery / "data").glob("chunk-*.js")):
        text = path.read_text(encoding="utf-8")
        found = re.fullmatch(r"VG_CHUNK\((\d+),(.*)\);\n", text, re.S)
        assert found, path
        rows += json.loads(found[2])
    return rows


def meta(gallery: Path) -> dict:
    text = (gallery / "data" / "meta.js").read_text(encoding="utf-8")
    return json.loads(text.removeprefix("window.VG_META = ").removesuffix(";\n"))
