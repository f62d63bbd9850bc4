"""A real chat-completions server on 127.0.0.1, for the API engine's tests and benchmark.

It answers from the images it receives, so a test can tell which video a caption came from: for each
image, its size and mean colour ("2 images: 64x48 rgb(16,40,88); 64x48 rgb(40,40,88)"), and for a frame of
a synthetic video (vidcap.fixtures.synth) the seed and frame index drawn into it ("... seed 7 frame 3"). It can require
an API key (401 otherwise, echoing the key it got, as a careless server might), add a fixed latency, and
inject faults chosen per request by a rule the test gives. A text-only request (tags from a caption) is
answered with a known tag list, by default `tags_for(caption)`: the caption's distinct words, as JSON. It counts requests, requests in flight (the
most at once, too) and logs when each request arrived. Run it with `with FakeOpenAIServer(...) as server:`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import select
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageStat

from vidcap.fixtures.synth import frame_signature

#: the faults a rule may ask for
FAULTS = ("429", "quota", "500", "503", "slow", "drop", "malformed", "not_completion", "refusal",
          "content_filter", "empty", "bad_request", "length")

PROMPT_TOKENS_PER_IMAGE = 85  # what OpenAI bills for a "low" detail image


@dataclass(frozen=True)
class RequestInfo:
    """What a fault rule sees of a chat request."""

    index: int  # 0-based arrival order among chat requests
    attempt: int  # 1-based: how many times this same payload (prompt and images) has arrived
    prompt: str
    answer: str = ""  # what the server would answer (describe_images): a rule can pick a video by its seed


FaultRule = Callable[[RequestInfo], "str | None"]


@dataclass(frozen=True)
class Answered:
    """One billed answer, as the server's own record: when it was sent, for which video, which attempt of
    that payload, and whether it was a caption ("ok") or a billed non-caption (the fault, e.g. "refusal")."""

    time: float  # time.monotonic() just before the answer went out
    seed: int | None  # the synthetic video's seed (None: not such frames)
    attempt: int
    kind: str
    prompt_tokens: int
    completion_tokens: int


def describe_images(urls: list[str]) -> str:
    """The answer for these image data URLs: size, rounded mean colour and (synthetic frames) signature."""
    parts = []
    for url in urls:
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        width, height = image.size
        # decode at down to 1/8 scale (same mean, a quarter of the CPU), keeping enough pixels per signature cell
        image.draft("RGB", (max(width // 8, min(width, 96)), max(height // 8, min(height, 64))))
        rgb = image.convert("RGB")
        r, g, b = (int(round(v)) for v in ImageStat.Stat(rgb).mean)
        part = f"{width}x{height} rgb({r},{g},{b})"
        try:
            seed, index = frame_signature(np.asarray(rgb))
            part += f" seed {seed} frame {index}"
        except ValueError:  # not a frame of a synthetic video
            pass
        parts.append(part)
    return f"{len(urls)} images: " + "; ".join(parts)


def caption_of(prompt: str) -> str:
    """The caption inside a tag prompt: after the last "Description:" (the built-in prompts), else the last
    paragraph."""
    if "Description:" in prompt:
        return prompt.rsplit("Description:", 1)[1].strip()
    return prompt.rsplit("\n\n", 1)[-1].strip()


def tags_for(caption: str) -> list[str]:
    """The known tags of a caption: its distinct lowercase words, letters and digits only, in order."""
    words = ["".join(c for c in word if c.isalnum()) for word in caption.lower().split()]
    return list(dict.fromkeys(w for w in words if w))


def answer_tags(prompt: str) -> str:
    return json.dumps(tags_for(caption_of(prompt)))


class FakeOpenAIServer:
    def __init__(self, *, api_key: str | None = None, latency_s: float = 0.0, faults: FaultRule | None = None,
                 retry_after: str | Callable[[], str] | None = "1", slow_s: float = 2.0,
                 models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini"),
                 text_answer: Callable[[str], str] = answer_tags) -> None:
        self.api_key = api_key
        self.text_answer = text_answer
        self.latency_s = latency_s
        self.faults = faults
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.models = models
        self.chat_requests = 0
        self.model_list_requests = 0
        self.unauthorized = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.faults_sent: Counter[str] = Counter()
        self.log: list[tuple[float, RequestInfo]] = []  # (time.monotonic(), request) of each chat request
        self.attempts: Counter[str] = Counter()  # payload digest -> times seen
        self.billed: Counter[int | None] = Counter()  # seed of the video -> completions answered with usage
        self.answered: list[Answered] = []  # every completion answered with usage (billed), in order
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @staticmethod
    def seed_of(answer: str) -> int | None:
        """The seed of the synthetic video whose frames a request carried (None: not such frames)."""
        found = re.search(r"seed (\d+) frame", answer)
        return int(found[1]) if found else None

    # -- bookkeeping (called from handler threads) ----------------------------------------------------
    def _arrive(self, digest: str, prompt: str, answer: str) -> RequestInfo:
        with self._lock:
            info = RequestInfo(index=self.chat_requests, attempt=self.attempts[digest] + 1, prompt=prompt,
                               answer=answer)
            self.chat_requests += 1
            self.attempts[digest] += 1
            self.log.append((time.monotonic(), info))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return info

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default 5 drops connects when 32+ clients open at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is no error here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    disable_nagle_algorithm = True  # headers and body go in two writes: Nagle would hold the body ~40 ms
    fake: FakeOpenAIServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; tests read counters
        pass

    # -- routes ------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/v1/models":
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
        with self.fake._lock:
            self.fake.model_list_requests += 1
        if self._authorized():
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]})

    def do_POST(self) -> None:  # noqa: N802
        received = time.monotonic()
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-request (cancelled)
            self.close_connection = True
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
        request = json.loads(body)
        content = request["messages"][0]["content"]
        if isinstance(content, str):  # a text-only message
            content = [{"type": "text", "text": content}]
        prompt = "".join(part["text"] for part in content if part["type"] == "text")
        urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
        digest = hashlib.sha256(json.dumps([prompt, urls]).encode()).hexdigest()
        answer = describe_images(urls) if urls else self.fake.text_answer(prompt)
        info = self.fake._arrive(digest, prompt, answer)
        self._flying = True
        try:
            if not self._authorized():
                return
            if request.get("model") not in self.fake.models:
                return self._json(404, {"error": {"message": f"The model `{request.get('model')}` does not exist",
                                                  "type": "invalid_request_error", "code": "model_not_found"}})
            fault = self.fake.faults(info) if self.fake.faults else None
            if fault is not None:
                with self.fake._lock:
                    self.fake.faults_sent[fault] += 1
            self._answer(request, prompt, urls, answer, fault, received, info)
        finally:
            self._land()

    # -- answers -----------------------------------------------------------------------------------
    def _answer(self, request: dict[str, Any], prompt: str, urls: list[str], answer: str, fault: str | None,
                received: float, info: RequestInfo) -> None:
        if fault is not None and fault not in FAULTS:  # a typo in a test's rule: make it show in the rows
            return self._json(599, {"error": {"message": f"unknown fault {fault!r}", "type": "test_error"}})
        if fault == "429":
            value = self.fake.retry_after() if callable(self.fake.retry_after) else self.fake.retry_after
            headers = {"Retry-After": value} if value is not None else {}
            return self._json(429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                              "code": "rate_limit_exceeded"}}, headers)
        if fault == "quota":
            return self._json(429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                              "code": "insufficient_quota"}})
        if fault in ("500", "503"):
            return self._json(int(fault), {"error": {"message": "The server had an error", "type": "server_error"}})
        if fault == "bad_request":
            sent = self.headers.get("Authorization", "")
            return self._json(400, {"error": {"message": f"Invalid image (request authorized by {sent!r})",
                                              "type": "invalid_request_error"}})
        if fault == "drop":
            self.close_connection = True  # no status line at all: the client sees a dropped connection
            self._land()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        # the latency is the whole response time, our own work included, as a real API's would be
        if not self._sleep_until(received + (self.fake.slow_s if fault == "slow" else self.fake.latency_s)):
            return
        if fault == "malformed":
            return self._raw(200, b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "trunc')
        if fault == "not_completion":
            return self._json(200, {"status": "ok"})
        message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
        finish = "stop"
        if fault == "refusal":
            message.update(content=None, refusal="I'm sorry, I can't help with that.")
        elif fault == "content_filter":
            message["content"], finish = "", "content_filter"
        elif fault == "empty":
            message["content"] = ""
        elif fault == "length":  # cut at max_tokens: the first half of the answer, as a real API stops mid-way
            words = answer.split()
            message["content"], finish = " ".join(words[:max(1, len(words) // 2)]), "length"
        prompt_tokens = PROMPT_TOKENS_PER_IMAGE * len(urls) + len(prompt.split())
        completion_tokens = len((message["content"] or message["refusal"] or "").split())
        with self.fake._lock:  # a completion with usage: what an API bills
            self.fake.billed[self.fake.seed_of(answer)] += 1
            self.fake.answered.append(Answered(time.monotonic(), self.fake.seed_of(answer), info.attempt,
                                               fault or "ok", prompt_tokens, completion_tokens))
        self._json(200, {
            "id": f"chatcmpl-fake-{self.fake.chat_requests}", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})

    def _authorized(self) -> bool:
        sent = self.headers.get("Authorization", "")
        if self.fake.api_key is None or sent == f"Bearer {self.fake.api_key}":
            return True
        with self.fake._lock:
            self.fake.unauthorized += 1
        self._json(401, {"error": {"message": f"Incorrect API key provided: {sent.removeprefix('Bearer ')}",
                                   "type": "invalid_request_error", "code": "invalid_api_key"}})
        return False

    def _sleep_until(self, deadline: float) -> bool:
        """Wait, but notice a client that gave up (timeout): False then, and it counts as no longer in flight."""
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    self.close_connection = True
                    self._land()
                    return False
                time.sleep(max(0.0, deadline - time.monotonic()))  # data, not a close: nothing to watch
        return True

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(payload).encode(), headers)

    def _land(self) -> None:
        """No longer in flight: called before the client can see the answer (or the hang-up), so that its
        next request, which may come at once on another connection, never finds this one still counted."""
        if getattr(self, "_flying", False):
            self._flying = False
            self.fake._leave()

    def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self._land()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
