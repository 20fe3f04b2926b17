"""What an endpoint's reply becomes (agent/llm/client.py sends the request): its body parsed here, not by
the SDK, into choices, usage and the model's name, and the records of a request and of its attempts.
Nothing the endpoint sends is trusted: a choice without text, a refusal or a reply longer than
max_reply_chars becomes a skipped Choice with its reason (and what was received), never an exception."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

_EXCERPT = 2000  # chars of a bad body or server error kept in messages and records


def excerpt(text: str, limit: int = _EXCERPT) -> str:
    """`text`, cut to `limit` characters with a note of how many more there were."""
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit} more chars]"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = Field(True, description="False when the endpoint sent no usable usage block.")

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def share(self, k: int, i: int) -> Usage:
        """Choice i's share of a request's usage over its k choices (the shares add up to the whole)."""

        def part(total: int) -> int:
            return total // k + (1 if i < total % k else 0)

        return Usage(
            prompt_tokens=part(self.prompt_tokens),
            completion_tokens=part(self.completion_tokens),
            reported=self.reported,
        )


class Attempt(BaseModel):
    """One HTTP request of a `complete` call."""

    number: int
    latency_s: float
    status: int | None = None  # HTTP status; None when no response came (timeout, connection refused)
    error: str | None = None  # None: this attempt gave the result
    wait_s: float | None = None  # the delay before the next attempt, when there was one


class Choice(BaseModel):
    """One reply of a request. `text` is None when the choice was skipped; `skipped` says why."""

    index: int
    text: str | None
    skipped: str | None = None
    raw: str | None = Field(None, description="What was received when skipped (truncated), for the record.")
    finish_reason: str | None = None
    reasoning_chars: int = 0

    @property
    def truncated(self) -> bool:
        """The reply hit the token limit: its code is likely cut."""
        return self.finish_reason == "length"


class ChatResult(BaseModel):
    choices: list[Choice]
    usage: Usage
    latency_s: float
    model: str
    attempts: list[Attempt]

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices if c.text is not None]


def _content_text(content: Any) -> str | None:
    """Message content as text: a string, or a list of {'type': 'text', 'text': ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _body_error(
    reason: str, body: str, usage: Usage, model: str | None
) -> tuple[list[Choice], Usage, str | None, str]:
    return [Choice(index=0, text=None, skipped=reason, raw=excerpt(body))], usage, model, reason


def _choice(i: int, raw: Any, max_reply_chars: int) -> Choice:
    """One choice of a body: its text, or why it is skipped (no message, a refusal, no content, too long)."""
    message = raw.get("message") if isinstance(raw, dict) else None
    finish = raw.get("finish_reason") if isinstance(raw, dict) else None
    finish = finish if isinstance(finish, str) else None
    if not isinstance(message, dict):
        return Choice(
            index=i, text=None, skipped="choice has no message", raw=excerpt(str(raw)), finish_reason=finish
        )
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    reasoning_chars = len(reasoning) if isinstance(reasoning, str) else 0
    text = _content_text(message.get("content"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip() and (not text or not text.strip()):
        return Choice(
            index=i,
            text=None,
            skipped=f"the model refused: {excerpt(refusal.strip(), 300)}",
            raw=excerpt(refusal),
            finish_reason=finish,
        )
    if not text or not text.strip():
        why = f"choice has no content (finish_reason={finish})"
        if reasoning_chars:
            why += f"; only {reasoning_chars} chars of reasoning, which are not searched for code"
        return Choice(index=i, text=None, skipped=why, finish_reason=finish, reasoning_chars=reasoning_chars)
    if len(text) > max_reply_chars:
        return Choice(
            index=i,
            text=None,
            raw=text[:max_reply_chars],
            finish_reason=finish,
            reasoning_chars=reasoning_chars,
            skipped=f"reply of {len(text)} chars exceeds max_reply_chars={max_reply_chars}; recorded "
            "truncated, not used",
        )
    return Choice(index=i, text=text, finish_reason=finish, reasoning_chars=reasoning_chars)


def parse_body(body: str, max_reply_chars: int) -> tuple[list[Choice], Usage, str | None, str | None]:
    """(choices, usage, model, body_error) from a response body; every defect becomes a skipped choice."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        return _body_error(f"invalid JSON body: {e}", body, Usage(reported=False), None)
    if not isinstance(data, dict):
        why = f"body is JSON {type(data).__name__}, not an object"
        return _body_error(why, body, Usage(reported=False), None)
    usage_data = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt_t, completion_t = _int(usage_data.get("prompt_tokens")), _int(usage_data.get("completion_tokens"))
    usage = Usage(
        prompt_tokens=prompt_t or 0,
        completion_tokens=completion_t or 0,
        reported=prompt_t is not None and completion_t is not None,
    )
    model = data["model"][:200] if isinstance(data.get("model"), str) and data["model"].strip() else None
    raw_choices = data.get("choices")
    if not isinstance(raw_choices, list) or not raw_choices:
        what = "an empty choices list" if isinstance(raw_choices, list) else "no choices list"
        return _body_error(f"the endpoint returned {what}", body, usage, model)
    choices = [_choice(i, raw, max_reply_chars) for i, raw in enumerate(raw_choices)]
    if not usage.reported:
        # No usage block: estimate (about 4 chars a token) so that a token budget still bites.
        usage.completion_tokens = sum(len(c.text or c.raw or "") for c in choices) // 4
    return choices, usage, model, None
