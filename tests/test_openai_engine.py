"""The OpenAI-compatible engine against a real chat-completions server on 127.0.0.1 (tests/openai_server.py),
through the real official client.

The server answers with the size and mean colour of each image it receives; every sample's frames have
colours of their own, so each caption is checked against its own sample's frames, not merely for being
there. Faults are chosen by markers in a sample's prompt: "[once:500]" on its first attempt only,
"[always:500]" on every attempt.
"""

from __future__ import annotations

import dataclasses

import email.utils
import json
import logging
import re
import socket
import time

import numpy as np
import pytest

from openai_server import PROMPT_TOKENS_PER_IMAGE, FakeOpenAIServer, RequestInfo
from vidcap.engines import create_engine
from vidcap.engines.api_key import resolve_api_key
from vidcap.engines.api_pricing import load_prices, price_for
from vidcap.engines.api_retry import RetryPolicy, parse_retry_after
from vidcap.engines.base import Caption, Sample
from vidcap.engines.openai_api import ApiSetupError, OpenAIEngine, OpenAISettings
from vidcap.errors import UserError

pytestmark = pytest.mark.timeout(60)


def direct(*, api_key: str, retry: RetryPolicy | None = None, **settings) -> OpenAIEngine:
    """An engine with a key given in the code (the run's engine reads it from the environment or a file)."""
    return OpenAIEngine(OpenAISettings(**settings), api_key=api_key, retry=retry)

KEY = "sk-test-9f3c2a7e41d8b6"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
FRAMES, HEIGHT, WIDTH, MAX_SIDE = 3, 96, 128, 64
PROMPT = "Describe this video."


def colour(sample: int, frame: int) -> tuple[int, int, int]:
    """A colour of its own for each (sample, frame), at least 24 apart from every other in some channel."""
    k = sample * FRAMES + frame
    return 16 + 24 * (k % 10), 16 + 24 * (k // 10 % 10), 16 + 24 * (k // 100 % 10)


def make_samples(n: int, prompts: dict[int, str] | None = None) -> list[Sample]:
    prompts = prompts or {}
    return [Sample(key=f"video-{i:03d}.mp4", prompt=prompts.get(i, PROMPT),
                   frames=[np.full((HEIGHT, WIDTH, 3), colour(i, j), np.uint8) for j in range(FRAMES)])
            for i in range(n)]


def assert_caption_is_for(caption: Caption, index: int) -> None:
    """The server described exactly this sample's frames, shrunk to MAX_SIDE, in order."""
    assert caption.ok, caption.error
    found = re.findall(r"(\d+)x(\d+) rgb\((\d+),(\d+),(\d+)\)", caption.text)
    assert len(found) == FRAMES, caption.text
    for j, (w, h, *rgb) in enumerate(found):
        assert (int(w), int(h)) == (MAX_SIDE, MAX_SIDE * HEIGHT // WIDTH)
        assert np.abs(np.array(rgb, int) - colour(index, j)).max() <= 4, (index, j, caption.text)


def marker_faults(info: RequestInfo) -> str | None:
    found = re.search(r"\[(always|once):(\w+)\]", info.prompt)
    if found and (found[1] == "always" or info.attempt == 1):
        return found[2]
    return None


@pytest.fixture
def make_engine():
    engines: list[OpenAIEngine] = []

    def make(server: FakeOpenAIServer, **settings) -> OpenAIEngine:
        options = dict(model="gpt-4o", api_key=KEY, api_base=server.base_url, concurrency=4,
                       request_timeout_s=5.0, retry=FAST_RETRY, jpeg_max_side=MAX_SIDE)
        engines.append(direct(**{**options, **settings}))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()


# -- captions, usage, cost -----------------------------------------------------------------------------
def test_every_row_once_each_caption_for_its_own_sample_with_usage_and_cost(make_engine):
    samples = make_samples(40)
    with FakeOpenAIServer(api_key=KEY, latency_s=0.02) as server:
        engine = make_engine(server, concurrency=6)
        captions = engine.caption(samples[:25]) + engine.caption(samples[25:])
    assert len(captions) == 40
    for i, caption in enumerate(captions):
        assert_caption_is_for(caption, i)
    assert server.chat_requests == 40 and set(server.attempts.values()) == {1}  # each sample sent once
    per_row_prompt = PROMPT_TOKENS_PER_IMAGE * FRAMES + len(PROMPT.split())
    assert {c.prompt_tokens for c in captions} == {per_row_prompt}
    assert all(c.generated_tokens == len(c.text.split()) for c in captions)
    price = price_for("gpt-4o")
    assert captions[0].extra["cost_usd"] == pytest.approx(price.cost(per_row_prompt, captions[0].generated_tokens))
    stats = engine.stats()
    assert stats["rows_ok"] == 40 and stats["rows_error"] == 0
    assert stats["requests"] == 40 and stats["retries"] == 0
    assert stats["prompt_tokens"] == 40 * per_row_prompt
    assert stats["completion_tokens"] == sum(c.generated_tokens for c in captions)
    assert stats["cost_usd"] == pytest.approx(price.cost(stats["prompt_tokens"], stats["completion_tokens"]))
    assert stats["price"]["source"].startswith("built-in list price as of")
    json.dumps(stats)  # goes into the shard stats file as it is


def test_empty_batch_sends_nothing(make_engine):
    with FakeOpenAIServer() as server:
        assert make_engine(server).caption([]) == []
    assert server.chat_requests == 0


# -- faults survived -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, counter", [
    ("429", "rate_limited"), ("500", "server_error"), ("503", "server_error"), ("slow", "timeout"),
    ("drop", "connection"), ("malformed", "malformed"), ("not_completion", "malformed"),
])
def test_each_fault_kind_is_retried_and_survived(make_engine, fault, counter):
    samples = make_samples(8, {i: f"{PROMPT} [once:{fault}]" for i in range(8)})
    with FakeOpenAIServer(api_key=KEY, faults=marker_faults, retry_after="0", slow_s=2.0) as server:
        engine = make_engine(server, request_timeout_s=0.8 if fault == "slow" else 5.0)
        captions = engine.caption(samples)
    for i, caption in enumerate(captions):
        assert_caption_is_for(caption, i)
        assert caption.extra["attempts"] == 2
    assert server.faults_sent[fault] == 8 and server.chat_requests == 16
    stats = engine.stats()
    assert stats["faults"][counter] == 8 and stats["retries"] == 8 and stats["rows_ok"] == 8


def test_mixed_faults_on_a_big_batch_keep_every_row_in_place(make_engine):
    kinds = ["429", "500", "slow", "drop", "malformed", None, None]

    def rule(info: RequestInfo) -> str | None:  # two faults in a row for some samples, none for others
        index = int(re.search(r"#(\d+)", info.prompt)[1])
        return kinds[(index + info.attempt) % len(kinds)] if info.attempt <= 2 else None

    samples = make_samples(35, {i: f"{PROMPT} #{i}" for i in range(35)})
    with FakeOpenAIServer(faults=rule, retry_after="0", slow_s=1.5, latency_s=0.01) as server:
        engine = make_engine(server, concurrency=8, request_timeout_s=0.6)
        captions = engine.caption(samples)
    for i, caption in enumerate(captions):
        assert_caption_is_for(caption, i)
    assert sum(server.faults_sent.values()) > 35
    # the engine's own count: a server notices a timed-out client only a moment after it has gone
    assert engine.stats()["max_in_flight"] <= 8


def test_persistent_faults_and_refusals_become_error_rows_in_their_own_places(make_engine):
    prompts = {2: "[always:500]", 5: "[always:drop]", 7: "[always:malformed]", 8: "[always:refusal]",
               9: "[always:content_filter]", 10: "[always:empty]", 11: "[always:bad_request]"}
    samples = make_samples(14, {i: f"{PROMPT} {marker}" for i, marker in prompts.items()})
    with FakeOpenAIServer(faults=marker_faults) as server:
        engine = make_engine(server)
        captions = engine.caption(samples)
    errors = {i: c.error for i, c in enumerate(captions) if not c.ok}
    assert sorted(errors) == sorted(prompts)
    assert errors[2].startswith("gave up after 4 attempts: HTTP 500")
    assert errors[5].startswith("gave up after 4 attempts: connection failed")
    assert errors[7].startswith("gave up after 4 attempts: unreadable answer")
    assert errors[8] == "refused: I'm sorry, I can't help with that."
    assert errors[9] == "refused: stopped by the content filter"
    assert errors[10].startswith("refused: empty answer")
    assert errors[11].startswith("HTTP 400: Invalid image")
    assert all(captions[i].text == "" for i in errors)
    for i in set(range(14)) - set(errors):
        assert_caption_is_for(captions[i], i)
    # bounded attempts for transient faults; no retry for answers that asking again would not change
    assert server.faults_sent["500"] == server.faults_sent["drop"] == server.faults_sent["malformed"] == 4
    for fault in ("refusal", "content_filter", "empty", "bad_request"):
        assert server.faults_sent[fault] == 1
    assert captions[8].prompt_tokens > 0  # a refusal is billed, so it is counted
    stats = engine.stats()
    assert stats["rows_error"] == 7 and stats["rows_ok"] == 7 and stats["refused"] == 3 and stats["rejected"] == 1


# -- concurrency, Retry-After, requests per minute --------------------------------------------------------
@pytest.mark.parametrize("concurrency", [3, 8])
def test_concurrency_cap_is_held_and_reached(make_engine, concurrency):
    with FakeOpenAIServer(latency_s=0.15) as server:
        engine = make_engine(server, concurrency=concurrency)
        captions = engine.caption(make_samples(32))
    assert all(c.ok for c in captions)
    assert server.max_in_flight == concurrency
    assert engine.stats()["max_in_flight"] == concurrency


def test_retry_after_seconds_is_honoured(make_engine):
    samples = make_samples(1, {0: f"{PROMPT} [once:429]"})
    with FakeOpenAIServer(faults=marker_faults, retry_after="1") as server:
        captions = make_engine(server).caption(samples)
    assert_caption_is_for(captions[0], 0)
    (first, _), (second, _) = server.log
    assert 1.0 <= second - first < 2.0


def test_retry_after_pauses_the_other_requests_too(make_engine):
    # The 429 goes to the first request the server gets, whichever sample that is: samples are JPEG-encoded in
    # threads before they take a slot, so on a loaded machine sample 0 may well be the last to ask.
    first_request_once = lambda info: "429" if info.index == 0 else None  # noqa: E731
    with FakeOpenAIServer(faults=first_request_once, retry_after="1", latency_s=0.2) as server:
        captions = make_engine(server, concurrency=2).caption(make_samples(8))
    for i, caption in enumerate(captions):
        assert_caption_is_for(caption, i)
    (refused_at, refused), *rest = server.log
    retried = [info for _, info in rest if info.answer == refused.answer and info.attempt == 2]
    assert len(retried) == 1 and len(rest) == 8  # 7 other samples and the retry
    # At most one request went along with the 429 (concurrency 2; it may arrive a little late on a loaded
    # machine). Every other one, the retry and the samples not yet started, waited out the pause although a
    # slot was free from the moment the 429 came back; without the pause they would come 0.2 s apart.
    after = [t - refused_at for t, _ in rest]
    assert not [d for d in after if 0.5 < d < 1.0], after
    assert sum(d < 0.5 for d in after) <= 1, after
    assert sum(d >= 1.0 for d in after) >= 7, after


def test_retry_after_as_http_date_is_honoured(make_engine):
    in_two_seconds = lambda: email.utils.formatdate(time.time() + 2, usegmt=True)  # noqa: E731
    samples = make_samples(1, {0: f"{PROMPT} [once:429]"})
    with FakeOpenAIServer(faults=marker_faults, retry_after=in_two_seconds) as server:
        captions = make_engine(server).caption(samples)
    assert_caption_is_for(captions[0], 0)
    (first, _), (second, _) = server.log
    assert 1.0 <= second - first < 3.0  # an HTTP date has whole seconds: the wait is in (1, 2] s


def test_parse_retry_after_forms():
    now = time.time()
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "-4"}) == 0.0
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}, now=now) \
        == pytest.approx(30, abs=1)
    assert parse_retry_after({"Retry-After": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_exponential_with_full_jitter_and_bounded():
    import random
    policy, rng = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0, max_retry_after_s=30.0), random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert 0.0 <= min(delays) and max(delays) <= ceiling and max(delays) > ceiling / 2
    assert 5.0 <= policy.delay(1, 5.0, rng) <= 6.0
    assert policy.delay(1, 3600.0, rng) <= 31.0


def test_requests_per_minute_cap_spaces_the_starts(make_engine):
    with FakeOpenAIServer() as server:
        engine = make_engine(server, concurrency=6, requests_per_minute=240)
        began = time.monotonic()
        captions = engine.caption(make_samples(6))
    assert all(c.ok for c in captions)
    assert engine.stats()["rate_wait_s"] > 1.0  # up to 0.25 + 0.5 + ... + 1.25 s held, summed
    # 240 a minute: the k-th request may not start before k * 0.25 s. A loaded machine can only delay an
    # arrival, never advance it, so this bound holds whatever the jitter; without the cap all six come at once.
    arrivals = [t - began for t, _ in server.log]
    for k, arrived in enumerate(arrivals):
        assert arrived >= k * 0.25 - 0.005, (k, arrivals)


# -- setup faults stop the task --------------------------------------------------------------------------
def test_wrong_key_stops_at_engine_start_with_one_clear_error(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key="sk-the-right-one") as server:
        config = OpenAISettings(model="gpt-4o", api_base=server.base_url)
        began = time.monotonic()
        with pytest.raises(ApiSetupError) as caught:
            create_engine("openai", config).open()
    assert time.monotonic() - began < 2.0
    assert isinstance(caught.value, UserError)
    assert "API key was refused" in str(caught.value) and "OPENAI_API_KEY" in str(caught.value)
    assert KEY not in str(caught.value)  # the server echoed it; the message must not
    assert server.model_list_requests == 1 and server.chat_requests == 0


def test_wrong_key_mid_run_raises_once_instead_of_an_error_per_row(make_engine):
    with FakeOpenAIServer(api_key="sk-the-right-one", latency_s=0.05) as server:
        engine = make_engine(server, concurrency=4)
        began = time.monotonic()
        with pytest.raises(ApiSetupError, match="API key was refused"):
            engine.caption(make_samples(30))
    assert time.monotonic() - began < 2.0
    assert server.chat_requests <= 4  # those already in flight, then nothing
    assert engine.stats()["rows_error"] == 0


@pytest.mark.parametrize("model, prompt, message", [
    ("gpt-unknown", PROMPT, "model 'gpt-unknown' or the API base URL is wrong"),
    ("gpt-4o", f"{PROMPT} [always:quota]", "no quota left"),
])
def test_unknown_model_or_no_quota_stops_the_batch(make_engine, model, prompt, message):
    with FakeOpenAIServer(faults=marker_faults) as server:
        with pytest.raises(ApiSetupError, match=re.escape(message)):
            make_engine(server, model=model).caption(make_samples(12, {i: prompt for i in range(12)}))
    assert server.chat_requests <= 4


def test_every_request_rejected_before_any_success_stops_the_run(make_engine):
    """A model without image input or a parameter the server does not know fails every row the same way."""
    with FakeOpenAIServer(faults=lambda info: "bad_request") as server:
        engine = make_engine(server, concurrency=4)
        with pytest.raises(ApiSetupError, match="the first 10 requests were all refused as invalid"):
            engine.caption(make_samples(40))
    assert server.chat_requests < 16


def test_unreachable_server_fails_at_start():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = direct(model="gpt-4o", api_key=KEY, api_base=f"http://127.0.0.1:{port}/v1", retry=FAST_RETRY)
    try:
        with pytest.raises(ApiSetupError, match="cannot reach the API .* after 4 attempts"):
            engine.check_access()
    finally:
        engine.close()


# -- the key -------------------------------------------------------------------------------------------
def test_key_comes_from_file_or_environment_and_its_absence_names_both(tmp_path):
    with pytest.raises(UserError) as caught:
        resolve_api_key(None, environ={})
    assert "OPENAI_API_KEY" in str(caught.value) and "--api-key-file" in str(caught.value)
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    assert resolve_api_key(str(key_file), environ={"OPENAI_API_KEY": "sk-other"}) == KEY  # the file wins
    assert resolve_api_key(None, environ={"OPENAI_API_KEY": KEY}) == KEY
    key_file.write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        resolve_api_key(str(key_file), environ={})
    with pytest.raises(UserError, match="cannot read"):
        resolve_api_key(str(tmp_path / "missing"), environ={})


def test_key_never_reaches_disk_or_logs(tmp_path, monkeypatch, caplog):
    """Everything the worker would keep (config, rows, stats, logs) holds no trace of the key, even when the
    server echoes it back in an error."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    secrets, run = tmp_path / "secrets", tmp_path / "run"
    secrets.mkdir()
    run.mkdir()
    (secrets / "key").write_text(KEY + "\n")
    caplog.set_level(logging.DEBUG)  # the client's and the HTTP library's debug logs too
    with FakeOpenAIServer(api_key=KEY, faults=marker_faults) as server:
        config = OpenAISettings(model="gpt-4o", api_base=server.base_url,
                                api_key_file=str(secrets / "key"), max_request_attempts=2, jpeg_max_side=MAX_SIDE)
        engine = create_engine("openai", config)
        engine.open()
        try:
            samples = make_samples(6, {4: f"{PROMPT} [always:bad_request]"})
            captions = engine.caption(samples)
            stats = engine.stats()
        finally:
            engine.close()
    assert captions[4].error.startswith("HTTP 400") and "[redacted]" in captions[4].error
    assert sum(c.ok for c in captions) == 5
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    (run / "rows.jsonl").write_text("".join(json.dumps({"key": s.key, "text": c.text, "error": c.error,
                                                        "extra": c.extra}) + "\n"
                                            for s, c in zip(samples, captions)))
    (run / "stats.json").write_text(json.dumps(stats))
    (run / "engine.log").write_text(caplog.text)
    assert "HTTP Request" in caplog.text  # the HTTP library did log at debug level
    leaks = [p for p in run.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert KEY not in caplog.text


# -- prices and settings ---------------------------------------------------------------------------------
def test_prices_builtin_snapshot_override_and_unknown(tmp_path):
    assert price_for("gpt-4o").input_usd_per_1m == 2.50
    assert price_for("gpt-4o-2024-08-06") == price_for("gpt-4o")  # a dated snapshot costs its family's price
    assert price_for("gpt-4o-2024-05-13").input_usd_per_1m == 5.00  # unless listed itself
    assert price_for("gpt-4o-mini").input_usd_per_1m == 0.15  # not mistaken for gpt-4o
    assert price_for("Qwen/Qwen2-VL-7B-Instruct") is None  # unknown: no price, not a price of 0
    custom = tmp_path / "prices.json"
    custom.write_text(json.dumps({"gpt-4o": {"input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0},
                                  "my-vllm": {"input_usd_per_1m": 0, "output_usd_per_1m": 0}}))
    table = load_prices(custom)
    assert price_for("gpt-4o", table).cost(1_000_000, 1_000_000) == 3.0
    assert price_for("my-vllm", table).source == "user"
    custom.write_text(json.dumps({"gpt-4o": {"input": 1.0}}))
    with pytest.raises(UserError, match="input_usd_per_1m"):
        load_prices(custom)


def test_unknown_price_gives_unknown_cost(make_engine):
    with FakeOpenAIServer(models=("my-vllm-model",)) as server:
        engine = make_engine(server, model="my-vllm-model")
        captions = engine.caption(make_samples(2))
    assert captions[0].ok and captions[0].extra["cost_usd"] is None
    assert engine.stats()["cost_usd"] is None and engine.stats()["prompt_tokens"] > 0


def test_bad_settings_are_one_user_error():
    with pytest.raises(UserError, match="--concurrency must be >= 1.*--image-detail must be one of"):
        direct(model="gpt-4o", api_key=KEY, concurrency=0, image_detail="medium")
    with pytest.raises(UserError, match="--model is required"):
        direct(model="", api_key=KEY)


def test_credentials_in_the_api_base_are_kept_out_of_stats():
    engine = direct(model="gpt-4o", api_key=KEY, api_base="http://user:hunter2@127.0.0.1:9/v1")
    try:
        assert "hunter2" not in json.dumps(engine.stats()) and engine.api_base == "http://127.0.0.1:9/v1/"
    finally:
        engine.close()
