"""`vidcap caption` end to end on this machine with a real tiny model: the user's one-shot command."""

from __future__ import annotations

import csv

import pytest

from vidcap.cli import main
from vidcap.fixtures.tiny_models import make_tiny_model
from worker_helpers import make_clips


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny-llava", family="llava")


@pytest.mark.timeout(300)
def test_caption_local_end_to_end(tmp_path, tiny_llava, capsys):
    manifest = make_clips(tmp_path / "v", 10, broken={3: "truncated", 7: "audio_only"})
    output = tmp_path / "out.csv"
    args = ["caption", str(manifest), "--output", str(output), "--model", str(tiny_llava), "--shards", "3",
            "--batch-size", "3", "--max-new-tokens", "8", "--num-frames", "2", "--resize", "64"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "10 rows: 8 captioned, 2 failed, 2 remaining" in out
    rows = list(csv.DictReader(open(output, encoding="utf-8")))
    assert [r["path"] for r in rows] == [f"clip_{i:03d}.mp4" for i in range(10)]
    assert [r["seed"] for r in rows] == [str(i) for i in range(10)]  # manifest columns kept
    for i, row in enumerate(rows):
        if i in (3, 7):
            assert row["status"] == "error" and row["error"] and not row["text"]
        else:
            assert row["status"] == "ok" and row["text"] and int(row["generated_tokens"]) > 0
    assert rows[7]["error"] == "no video stream"
    # a second run of the same command has nothing left to caption but the two broken videos
    assert main(args) == 0
    assert "every shard is done" in capsys.readouterr().out


def test_prompt_too_long_for_the_context_is_refused_at_start(tmp_path, tiny_llava, capsys):
    manifest = make_clips(tmp_path / "v", 2)
    prompt = tmp_path / "long.txt"
    prompt.write_text("# kind: video\n" + "describe every detail of the scene carefully " * 900)
    code = main(["caption", str(manifest), "--output", str(tmp_path / "o.csv"), "--model", str(tiny_llava),
                 "--prompt-file", str(prompt), "--num-frames", "2"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("vidcap caption: error: ") and "> context 4096" in last, err
    assert "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()
