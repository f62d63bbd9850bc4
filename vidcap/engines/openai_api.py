"""The OpenAI-compatible API engine: GPT-4o / GPT-4V, or your own server speaking chat completions (vLLM,
SGLang), through the official `openai` client. A frames sample goes as its prompt and K JPEG frames; a text
sample (a caption to draw tags from) as one text-only user message, its prompt.

One `run()` call sends the whole batch from an asyncio loop the engine owns: at most `concurrency`
requests in flight, starts kept under the requests-per-minute cap, each request retried on 429, 5xx,
timeouts, dropped connections and malformed answers with backoff (see `api_retry`) up to a bounded number
of attempts, after which that row, and only that row, is an error with the reason. A refusal, a
content-filter stop or an empty answer is an error row at once: asking again is billed and rarely helps.

Retries are ours, not the client's (`max_retries=0`): the client gives up on a Retry-After over two
minutes, backs off at most 8 s with 25% jitter, does not retry malformed JSON, cannot pause the other
requests when one is rate-limited, and does not say how often it retried. We need all of that, for the
stats and for staying under the provider's limit over a shard of thousands of requests.

A refused key, a refused permission, an unknown model or URL (404) or an exhausted quota is a fault of
the setup, not of a row: it raises `ApiSetupError` (a `UserError`) at once and the worker stops, instead
of writing one error row per video. So does a run whose first requests are all rejected as invalid (4xx)
before any succeeds. `open()` also checks the key with GET /models before any batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from vidcap.engines.api_images import DETAILS, chat_messages
from vidcap.engines.api_key import redact, resolve_api_key
from vidcap.engines.api_pricing import price_for
from vidcap.engines.api_ratelimit import RequestGate
from vidcap.engines.api_retry import RetryPolicy, parse_retry_after
from vidcap.engines.base import FRAMES, TEXT, AttemptLog, Engine, Result, Sample
from vidcap.errors import UserError
from vidcap.schema import lazy_schema
from vidcap.settings import operational

if TYPE_CHECKING:
    from openai import APIStatusError
    from openai.types.chat import ChatCompletion

    from vidcap.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

#: faults worth another attempt, also the names of their counters in the stats
RETRYABLE_FAULTS = ("rate_limited", "server_error", "timeout", "connection", "malformed")
_MESSAGE_CHARS = 300


class ApiSetupError(UserError):
    """The API refused the setup (key, permission, model, URL, quota): stop rather than error every row."""


class ApiUnreachableError(ApiSetupError):
    """No answer from the API at all (refused connection, DNS, timeouts): from where this runs, at least."""


@dataclass
class _Reply:
    """What one attempt gave: a completion, a retryable `fault`, or a final row `error`."""

    completion: ChatCompletion | None = None
    fault: str = ""
    error: str = ""
    retry_after: float | None = None
    rejected: bool = False  # the server called the request invalid (4xx): asking again would not help


@dataclass
class _Totals:
    """Running figures of this engine, reported in the shard stats.

    requests: HTTP attempts (retries included); retries and retry_wait_s: those repeated and the backoff
    slept; rate_wait_s: time requests were held by the requests-per-minute cap or a Retry-After pause; faults: retryable failures by kind; refused: answers that were a refusal, a content-filter stop
    or empty; rejected: requests the server called invalid (4xx); usage_missing: answers without token
    counts (their tokens, hence cost, are not counted); request_seconds: summed time inside requests.
    """

    rows_ok: int = 0
    rows_error: int = 0
    requests: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    rate_wait_s: float = 0.0
    refused: int = 0
    rejected: int = 0
    usage_missing: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_in_flight: int = 0
    request_seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RETRYABLE_FAULTS, 0))


@dataclass(frozen=True)
class OpenAISettings:
    """Never holds a secret: the key comes from the environment or from the file named by `api_key_file`."""

    model: str = ""
    max_new_tokens: int = 256
    api_base: str | None = None
    image_detail: str = "low"
    jpeg_quality: int = 85
    jpeg_max_side: int = 768
    api_key_file: str | None = operational(None)
    concurrency: int = operational(8)
    requests_per_minute: float | None = operational(None)
    request_timeout_s: float = operational(120.0)
    max_request_attempts: int = operational(6)
    prices: dict[str, Any] = operational(default_factory=dict)

    def __post_init__(self) -> None:
        _check_settings(self.model, self.concurrency, self.requests_per_minute, self.request_timeout_s,
                        self.max_request_attempts, self.image_detail, self.jpeg_quality, self.jpeg_max_side)


class OpenAIEngine(Engine):
    name = "openai"
    accepts = frozenset({FRAMES, TEXT})
    Settings = OpenAISettings
    columns = lazy_schema(lambda pa: pa.schema([("finish_reason", pa.string()), ("attempts", pa.int64()),
                                                ("latency_s", pa.float64()), ("cost_usd", pa.float64())]))

    def __init__(self, settings: OpenAISettings | None = None, *, api_key: str | None = None,
                 retry: RetryPolicy | None = None) -> None:
        """Stores the settings; with `api_key` (tests, benchmarks) it also builds the client (no request)."""
        super().__init__(settings)
        self._retry = retry or RetryPolicy(max_attempts=self.settings.max_request_attempts)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._journal: AttemptLog | None = None
        if api_key is not None:
            self.connect(api_key)

    @classmethod
    def preflight(cls, settings: OpenAISettings, spec: "TaskSpec | None" = None) -> None:
        """The key must be at hand (environment or key file); the settings checked themselves when built."""
        resolve_api_key(settings.api_key_file)

    def open(self, spec: "TaskSpec | None" = None) -> None:
        """Build the client with the key from the environment or key file, and check the key now."""
        if self._loop is not None:
            return
        self.connect(resolve_api_key(self.settings.api_key_file))
        try:
            self.check_access()
        except BaseException:
            self.close()
            raise

    def connect(self, api_key: str) -> "OpenAIEngine":
        # openai (about 1 s to import) only here and where requests go: `vidcap status` describes API runs too
        import httpx2
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        settings = self.settings
        self.model = settings.model
        self.concurrency = settings.concurrency
        self.requests_per_minute = settings.requests_per_minute
        self._key = api_key
        self._timeout_s = settings.request_timeout_s
        self._max_new_tokens = settings.max_new_tokens
        self._image = {"detail": settings.image_detail, "quality": settings.jpeg_quality,
                       "max_side": settings.jpeg_max_side}
        self._price = price_for(settings.model, settings.prices)
        self._loop = asyncio.new_event_loop()
        timeout = httpx2.Timeout(settings.request_timeout_s, connect=min(settings.request_timeout_s, 10.0))
        self._client = AsyncOpenAI(
            api_key=api_key, base_url=settings.api_base, max_retries=0, timeout=timeout,
            http_client=DefaultAsyncHttpxClient(
                timeout=timeout,
                limits=httpx2.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)))
        self.api_base = _without_userinfo(str(self._client.base_url))
        self._slots = asyncio.Semaphore(self.concurrency)
        self._gate = RequestGate(self.requests_per_minute)
        self._rng = random.Random()
        self._in_flight = 0
        self._totals = _Totals()
        self._stopped: ApiSetupError | None = None  # once set, no request leaves any more
        return self

    # -- Engine -------------------------------------------------------------------------------------
    def run(self, samples: Sequence[Sample]) -> list[Result]:
        if not samples:
            return []
        if self._loop is None:
            self.open()
        return self._loop.run_until_complete(self._caption_batch(samples))

    def check_access(self) -> None:
        """One cheap request (GET /models) so a wrong key or an unreachable server stops the task at start."""
        self._loop.run_until_complete(self._check_access())

    def figures(self) -> dict[str, Any]:
        if self._loop is None:
            return {"engine": self.name, "model": self.settings.model}
        totals = asdict(self._totals)
        for name in ("retry_wait_s", "rate_wait_s", "request_seconds"):
            totals[name] = round(totals[name], 3)
        cost = self._price.cost(self._totals.prompt_tokens, self._totals.completion_tokens) if self._price else None
        return {"engine": self.name, "model": self.model, "api_base": self.api_base,
                "concurrency": self.concurrency, "requests_per_minute": self.requests_per_minute, **totals,
                "cost_usd": cost, "price": self._price.to_dict() if self._price else None}

    def log_attempts(self, log: AttemptLog | None) -> None:
        self._journal = log

    def close(self) -> None:
        self._journal = None
        if self._loop is None or self._loop.is_closed():
            return
        try:
            leftover = asyncio.all_tasks(self._loop)  # requests of a batch cut short by an interrupt
            for task in leftover:
                task.cancel()
            if leftover:
                self._loop.run_until_complete(asyncio.wait(leftover))
            self._loop.run_until_complete(self._client.close())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    # -- one batch ----------------------------------------------------------------------------------
    async def _caption_batch(self, samples: Sequence[Sample]) -> list[Result]:
        tasks = [asyncio.ensure_future(self._caption_one(sample)) for sample in samples]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:  # a setup error (or an interrupt): stop the requests still going
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _caption_one(self, sample: Sample) -> Result:
        if sample.text is not None and not sample.frames:  # a text sample: the task's prompt holds the text
            messages: list[dict[str, Any]] = [{"role": "user", "content": sample.prompt or sample.text}]
        elif not sample.frames:  # a frames request without frames would come back with a caption of nothing
            return self._finish(sample, Result(error="no frames to send"), time.monotonic(), 0)
        else:
            # Encode before taking a request slot, so JPEG work (in threads) runs ahead of the requests instead
            # of delaying them; the batch's JPEGs are small next to the raw frames the batch already holds.
            try:
                messages = await asyncio.to_thread(chat_messages, sample.prompt, sample.frames, **self._image)
            except ValueError as exc:
                return self._finish(sample, Result(error=f"cannot encode frames: {exc}"), time.monotonic(), 0)
        began = 0.0  # first slot taken: latency counts retries, not the queue before
        prompt_tokens = completion_tokens = 0
        attempt = 0
        while True:
            attempt += 1
            async with self._slots:
                began = began or time.monotonic()
                waited = await self._gate.wait()  # not `+= await`: that would add to a stale total
                self._totals.rate_wait_s += waited
                reply = await self._attempt(messages, sample.key, attempt)
            if reply.completion is not None:
                used_prompt, used_completion = self._count_usage(reply.completion)
                prompt_tokens += used_prompt
                completion_tokens += used_completion
                caption = self._read_answer(reply.completion)
                break
            if reply.rejected:
                self._stop_if_all_rejected(reply.error)
            if not reply.fault or attempt >= self._retry.max_attempts:
                error = f"gave up after {attempt} attempts: {reply.error}" if reply.fault else reply.error
                caption = Result(error=error)
                break
            delay = self._retry.delay(attempt, reply.retry_after, self._rng)
            if reply.retry_after:  # the others wait what the server asked; the jitter is this request's own
                self._gate.pause(min(reply.retry_after, self._retry.max_retry_after_s))
            log.debug("%s: attempt %d failed (%s), retrying in %.2f s", sample.key, attempt, reply.error, delay)
            self._totals.retries += 1
            self._totals.retry_wait_s += delay
            await asyncio.sleep(delay)
        caption.prompt_tokens, caption.generated_tokens = prompt_tokens, completion_tokens
        return self._finish(sample, caption, began, attempt)

    def _finish(self, sample: Sample, caption: Caption, began: float, attempts: int) -> Result:
        cost = self._price.cost(caption.prompt_tokens, caption.generated_tokens) if self._price else None
        caption.extra.update(attempts=attempts, latency_s=round(time.monotonic() - began, 3), cost_usd=cost)
        if caption.ok:
            self._totals.rows_ok += 1
        else:
            self._totals.rows_error += 1
            log.warning("%s: %s", sample.key, caption.error)
        return caption

    # -- one request --------------------------------------------------------------------------------
    async def _attempt(self, messages: list[dict[str, Any]], key: str = "", number: int = 1) -> _Reply:
        if self._stopped:  # another request of the batch hit a setup error while this one waited for a slot
            raise self._stopped
        journal = self._journal
        ident = journal.sent(key, number) if journal else ""  # before it leaves: a kill may come any time
        try:
            reply = await self._send(messages)
        except ApiSetupError:  # refused (key, model, quota): nothing billed. A cancelled request stays unknown
            if journal:
                journal.ended(ident)
            raise
        if journal:
            usage = reply.completion.usage if reply.completion is not None else None
            journal.ended(ident, (usage.prompt_tokens or 0) if usage else 0,
                          (usage.completion_tokens or 0) if usage else 0)
        return reply

    async def _send(self, messages: list[dict[str, Any]]) -> _Reply:
        from openai import (APIConnectionError, APIResponseValidationError, APIStatusError, APITimeoutError,
                            AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError)

        self._totals.requests += 1
        self._in_flight += 1
        self._totals.max_in_flight = max(self._totals.max_in_flight, self._in_flight)
        sent = time.monotonic()
        try:
            completion = await self._client.chat.completions.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                max_completion_tokens=self._max_new_tokens)
        except (AuthenticationError, PermissionDeniedError, NotFoundError) as exc:
            raise self._setup_error(exc) from None
        except RateLimitError as exc:
            if exc.code == "insufficient_quota":
                raise self._setup_error(exc) from None
            return self._fault("rate_limited", self._describe(exc), parse_retry_after(exc.response.headers))
        except APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                return self._fault("server_error", self._describe(exc), parse_retry_after(exc.response.headers))
            return _Reply(error=self._describe(exc), rejected=True)
        except APITimeoutError:
            return self._fault("timeout", f"no answer within {self._timeout_s:g} s")
        except APIConnectionError as exc:
            return self._fault("connection", f"connection failed: {redact(str(exc.__cause__ or exc), self._key)}")
        except (APIResponseValidationError, ValueError) as exc:
            return self._fault("malformed", f"unreadable answer ({type(exc).__name__})")
        finally:
            self._in_flight -= 1
            self._totals.request_seconds += time.monotonic() - sent
        if not _is_chat_completion(completion):
            return self._fault("malformed", "the answer is not a chat completion")
        return _Reply(completion=completion)

    def _fault(self, fault: str, reason: str, retry_after: float | None = None) -> _Reply:
        self._totals.faults[fault] += 1
        return _Reply(fault=fault, error=reason, retry_after=retry_after)

    def _count_usage(self, completion: ChatCompletion) -> tuple[int, int]:
        """(prompt, completion) tokens of one answer, added to the totals; a server may send no usage."""
        usage = completion.usage
        if usage is None:
            self._totals.usage_missing += 1
            return 0, 0
        used = (usage.prompt_tokens or 0, usage.completion_tokens or 0)
        self._totals.prompt_tokens += used[0]
        self._totals.completion_tokens += used[1]
        return used

    def _stop_if_all_rejected(self, error: str) -> None:
        """Many requests refused as invalid and not one answered: the request is wrong, not the rows (a model
        without image input, a parameter an older server does not know). Stop rather than error every row."""
        self._totals.rejected += 1
        limit = max(10, 2 * self.concurrency)
        if self._totals.rows_ok == 0 and self._totals.rejected >= limit:
            self._stopped = ApiSetupError(f"the first {self._totals.rejected} requests were all refused as invalid "
                                          f"and none succeeded, last: {error} (from {self.api_base})")
            raise self._stopped

    def _read_answer(self, completion: ChatCompletion) -> Result:
        """The caption, or an error row for a refusal, a content-filter stop or an empty answer."""
        choice = completion.choices[0]
        finish = getattr(choice, "finish_reason", None)
        refusal = getattr(choice.message, "refusal", None)
        text = (choice.message.content or "").strip()
        extra: dict[str, Any] = {"finish_reason": finish}
        if refusal:
            error = f"refused: {redact(str(refusal), self._key)[:_MESSAGE_CHARS]}"
        elif finish == "content_filter":
            error = "refused: stopped by the content filter"
        elif not text:
            error = f"refused: empty answer (finish_reason={finish})"
        else:
            return Result(text=text, extra=extra, finish_reason=finish)
        self._totals.refused += 1
        return Result(error=error, extra=extra, finish_reason=finish)

    def _describe(self, exc: APIStatusError) -> str:
        """`HTTP status: message` from the server's answer, with the key removed and the length bounded."""
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else body
        text = str(message or exc.response.reason_phrase or "").strip()
        return f"HTTP {exc.status_code}: {redact(text, self._key)[:_MESSAGE_CHARS]}"

    def _setup_error(self, exc: APIStatusError) -> ApiSetupError:
        if exc.status_code == 401:
            hint = "the API key was refused: check OPENAI_API_KEY or --api-key-file"
        elif exc.status_code == 403:
            hint = f"this key may not use model {self.model!r} at this endpoint"
        elif exc.status_code == 404:
            hint = f"model {self.model!r} or the API base URL is wrong"
        else:
            hint = "the account has no quota left"
        self._stopped = ApiSetupError(f"{hint} ({self._describe(exc)} from {self.api_base})")
        return self._stopped

    async def _check_access(self) -> None:
        from openai import (APIConnectionError, APIResponseValidationError, APIStatusError, APITimeoutError,
                            AuthenticationError, PermissionDeniedError)

        reason = ""
        for attempt in range(1, self._retry.max_attempts + 1):
            await self._gate.wait()
            try:
                await self._client.models.list()
                return
            except (AuthenticationError, PermissionDeniedError) as exc:
                raise self._setup_error(exc) from None
            except APITimeoutError:
                reason = f"no answer within {self._timeout_s:g} s"
            except APIConnectionError as exc:
                reason = redact(str(exc.__cause__ or exc), self._key)
            except (APIStatusError, APIResponseValidationError, ValueError):
                return  # it answered but lists no models (some compatible servers): the first request will tell
            if attempt < self._retry.max_attempts:
                await asyncio.sleep(self._retry.delay(attempt, None, self._rng))
        raise ApiUnreachableError(f"cannot reach the API at {self.api_base} after {self._retry.max_attempts} "
                                  f"attempt{'s' if self._retry.max_attempts > 1 else ''}: {reason}")


def _is_chat_completion(completion: object) -> bool:
    """The client does not validate answers: check the little we read, so a bad one is a retryable fault."""
    from openai.types.chat import ChatCompletion

    if not isinstance(completion, ChatCompletion):
        return False
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        return False
    message = getattr(choices[0], "message", None)
    return message is not None and isinstance(getattr(message, "content", None), (str, type(None)))


def _without_userinfo(url: str) -> str:
    """The URL without `user:password@`, so it can go into stats and messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def _check_settings(model: str, concurrency: int, requests_per_minute: float | None, request_timeout_s: float,
                    max_attempts: int, image_detail: str, jpeg_quality: int, jpeg_max_side: int) -> None:
    problems = []
    if not model:
        problems.append("--model is required (e.g. gpt-4o, or the name your server serves)")
    if concurrency < 1:
        problems.append(f"--concurrency must be >= 1, got {concurrency}")
    if requests_per_minute is not None and not requests_per_minute > 0:
        problems.append(f"--rpm must be > 0, got {requests_per_minute}")
    if not request_timeout_s > 0:
        problems.append(f"the request timeout must be > 0 s, got {request_timeout_s}")
    if max_attempts < 1:
        problems.append(f"the number of attempts must be >= 1, got {max_attempts}")
    if image_detail not in DETAILS:
        problems.append(f"--image-detail must be one of {', '.join(DETAILS)}, got {image_detail!r}")
    if not 1 <= jpeg_quality <= 100:
        problems.append(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
    if jpeg_max_side < 16:
        problems.append(f"--jpeg-max-side must be >= 16, got {jpeg_max_side}")
    if problems:
        raise UserError("; ".join(problems))
