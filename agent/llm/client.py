"""One chat-completion request to an OpenAI-compatible endpoint, retried, budgeted and distrusted.

The `openai` client does the HTTP with its own retries off: we retry here so that every attempt is
recorded (status, error, wait). Retried: 408, 429, 5xx, timeouts and connection errors, with exponential
backoff and jitter, or the server's Retry-After (seconds, HTTP date or retry-after-ms) up to a cap.
Final: any other 4xx (bad key, unknown model, bad request), raised as LLMError at once. A body that is
not a chat completion (invalid JSON, not an object, no choices) is the endpoint's fault, not the model's:
retried like a 5xx.

Nothing the endpoint sends is trusted: the body is parsed by agent/llm/reply.py, not by the SDK; a choice
without text, a refusal or a reply longer than max_reply_chars becomes a skipped Choice with its reason
(and what was received), never an exception. `notify` hears of every retry (the console shows it).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import openai

from agent.llm.reply import Attempt, ChatResult, excerpt, parse_body
from agent.llm.settings import LLMSettings, api_key_value, safe_url


class BudgetExhausted(Exception):
    """The run's request or token budget is spent: the loop ends the run cleanly."""

    def __init__(self, message: str, attempts: list[Attempt] | None = None):
        super().__init__(message)
        self.attempts = attempts or []  # failed attempts of the request the budget stopped


class Budget:
    """Requests and tokens spent against the run's limits (None: unlimited). Thread-safe.

    `reserve()` counts a request before it is sent and raises BudgetExhausted when none is left; tokens are
    charged when the reply arrives, so requests already in flight may overshoot the token limit.
    """

    def __init__(self, max_requests: int | None = None, max_tokens: int | None = None):
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.requests = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def exhausted_reason(self) -> str | None:
        if self.max_requests is not None and self.requests >= self.max_requests:
            return f"LLM request budget spent: {self.requests} of {self.max_requests} requests made"
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            return f"LLM token budget spent: {self.tokens} of {self.max_tokens} tokens used"
        return None

    def reserve(self) -> None:
        with self._lock:
            reason = self.exhausted_reason()
            if reason:
                raise BudgetExhausted(reason)
            self.requests += 1

    def charge(self, tokens: int) -> None:
        with self._lock:
            self.tokens += max(0, tokens)


class LLMError(Exception):
    """A request failed for good: a final 4xx, or a transient failure that outlived its retries.

    `fatal`: no later request can succeed either (a refused key, an unknown model, nothing listening at
    the endpoint): the run ends as failed instead of asking again.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        fatal: bool = False,
        attempts: list[Attempt] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.fatal = fatal
        self.attempts = attempts or []


class EndpointFailed(Exception):
    """The endpoint cannot serve this run (wrong key or model, nothing listening, errors in a row): the run
    ends with status `failed` and this message. `part` names what to fix: endpoint, key or model."""

    def __init__(self, message: str, part: str = "endpoint"):
        super().__init__(message)
        self.part = part


def endpoint_failed(status: str, reason: str) -> bool:
    """Whether a run's status and reason say it ended for its endpoint (EndpointFailed's messages)."""
    return status == "failed" and reason.startswith(("LLM endpoint", "LLM preflight"))


FATAL_STATUS = {401: "key", 403: "key", 404: "model"}  # what a final status says is wrong
T = TypeVar("T")


class _Unusable(Exception):
    """A 200 whose body is not a chat completion."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error") or body
        return excerpt(str(msg), 500)
    try:
        return excerpt(e.response.text.strip(), 500) or e.response.reason_phrase
    except Exception:  # the body may be unreadable; the status still says enough
        return str(e)


def retry_after_s(headers: Any, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait (retry-after-ms, Retry-After in seconds or as an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ChatClient:
    """Chat completions against `settings.base_url`, with recorded retries and a shared budget."""

    def __init__(
        self,
        settings: LLMSettings,
        budget: Budget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        notify: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.notify = notify or (lambda message: None)
        self.model = settings.require_model()
        self.budget = budget or Budget(settings.max_requests, settings.max_tokens_total)
        self.sleep = sleep
        self.rng = rng
        key = api_key_value(settings)
        self._client = openai.OpenAI(
            base_url=settings.base_url, api_key=key, timeout=settings.timeout_s, max_retries=0
        )
        self.endpoint = safe_url(settings.base_url)

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        base = min(s.backoff_max_s, s.backoff_base_s * 2 ** (attempt - 1))
        return base * (0.5 + 0.5 * self.rng())  # jitter keeps parallel requests from retrying in step

    def _request(self, prompt: str, n: int, max_tokens: int | None = None) -> tuple[int, str]:
        kwargs: dict[str, Any] = {}
        if n > 1:
            kwargs["n"] = n  # some servers reject the field itself; n=1 is the default anyway
        raw = self._client.chat.completions.with_raw_response.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=self.settings.temperature,
            max_tokens=max_tokens or self.settings.max_tokens,
            **kwargs,
        )
        return raw.status_code, raw.text

    def _attempt(self, send: Callable[[], T]) -> tuple[int | None, str | None, T | None, float | None]:
        """One request: (status, error, value, retry_after). `error` None: `value` holds the answer."""
        try:
            return 200, None, send(), None
        except _Unusable as e:  # the endpoint's fault: asked again, never shown to the model
            return e.status, f"unusable body from {self.endpoint}: {e}", None, None
        except openai.APIStatusError as e:
            error = f"HTTP {e.status_code} from {self.endpoint}: {_server_message(e)}"
            return e.status_code, error, None, retry_after_s(e.response.headers)
        except openai.APITimeoutError:
            return None, f"no reply from {self.endpoint} within {self.settings.timeout_s:g} s", None, None
        except openai.APIConnectionError as e:
            cause = f" ({e.__cause__})" if e.__cause__ else ""
            return None, f"cannot connect to {self.endpoint}{cause}", None, None
        except openai.OpenAIError as e:  # anything else the SDK raises: final, but never a crash
            return (
                -1,
                f"request to {self.endpoint} failed: {type(e).__name__}: {excerpt(str(e), 500)}",
                None,
                None,
            )

    def _final(self, error: str, status: int | None, attempts: list[Attempt]) -> LLMError:
        """The LLMError of a final status: what to check, and whether any later request could succeed."""
        s = self.settings
        if status in (401, 403):
            key = f"the API key from {s.source_of('api_key')}" if s.api_key else "no API key is set"
            error += f" (check the key: {key})"
        elif status == 404:
            error += f" (is the model name {self.model!r} right?)"
        return LLMError(
            error, status=status, transient=False, fatal=status in FATAL_STATUS, attempts=attempts
        )

    def _retrying(self, send: Callable[[], T]) -> tuple[T, list[Attempt]]:
        """`send()`'s value, retried on transient failures. Raises LLMError or BudgetExhausted."""
        s = self.settings
        attempts: list[Attempt] = []
        for number in range(1, s.max_attempts + 1):
            try:
                self.budget.reserve()
            except BudgetExhausted as e:
                raise BudgetExhausted(str(e), attempts) from None
            t0 = time.monotonic()
            status, error, value, retry_after = self._attempt(send)
            attempt = Attempt(number=number, latency_s=time.monotonic() - t0, status=status, error=error)
            attempts.append(attempt)
            if error is None:
                return value, attempts  # type: ignore[return-value]  # error None: value is set
            transient = status is None or status in (408, 429) or status >= 500 or 200 <= status < 300
            if not transient:
                raise self._final(error, None if status == -1 else status, attempts)
            if number == s.max_attempts:
                break
            wait = min(retry_after, s.retry_after_cap_s) if retry_after is not None else self._backoff(number)
            attempt.wait_s = wait
            self.notify(
                f"LLM attempt {number} of {s.max_attempts} failed ({error}); retrying in {wait:.1f} s"
            )
            self.sleep(wait)
        tries = f"{len(attempts)} attempt{'s' if len(attempts) > 1 else ''}"
        # Nothing ever answered: no later request will either (a wrong URL, a server that is not up).
        unreachable = all(a.error and a.error.startswith("cannot connect") for a in attempts)
        raise LLMError(
            f"gave up after {tries}: {attempts[-1].error}",
            status=attempts[-1].status,
            transient=True,
            fatal=unreachable,
            attempts=attempts,
        )

    def complete(self, prompt: str, n: int = 1, max_tokens: int | None = None) -> ChatResult:
        """Up to n replies to `prompt`. Raises LLMError (request failed for good) or BudgetExhausted."""
        start = time.monotonic()

        def send() -> ChatResult:
            status, body = self._request(prompt, n, max_tokens)
            choices, usage, model, body_error = parse_body(body, self.settings.max_reply_chars)
            self.budget.charge(usage.total)
            if body_error is not None:
                raise _Unusable(f"{body_error}: {excerpt(body.strip(), 300)}", status)
            return ChatResult(
                choices=choices, usage=usage, latency_s=0.0, model=model or self.model, attempts=[]
            )

        result, attempts = self._retrying(send)
        return result.model_copy(update={"latency_s": time.monotonic() - start, "attempts": attempts})

    def list_models(self) -> list[str] | None:
        """The model names GET /models lists; None when the endpoint does not serve that path.
        Raises LLMError like `complete`."""

        def send() -> list[str] | None:
            try:
                raw = self._client.models.with_raw_response.list()
            except openai.APIStatusError as e:
                if e.status_code in (404, 405, 501):
                    return None
                raise
            try:
                data = json.loads(raw.text)
                return [m["id"] for m in data["data"] if isinstance(m.get("id"), str)]
            except (ValueError, KeyError, TypeError, AttributeError):
                return None  # a server that answers /models with something else does not list models

        models, _ = self._retrying(send)
        return models

    def close(self) -> None:
        self._client.close()
