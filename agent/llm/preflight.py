"""One cheap request before the first prompt: is the endpoint there, is the key accepted, is the model served?

`GET /models` answers all three on most servers (OpenAI, vLLM, SGLang, llama.cpp, Ollama's /v1); where that
path is not served, a one-token completion asks the same. A failure names the part to fix (endpoint, key or
model) with the endpoint's own message, so a run never spends its stages on requests that cannot succeed.
A run that names no model and a server that lists exactly one uses that one, and says so.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from agent.llm.client import FATAL_STATUS, ChatClient, EndpointFailed, LLMError
from agent.llm.settings import LLMConfigError, LLMSettings, safe_url

_LISTED = 8  # model names shown when the one asked for is not served


class Preflight(BaseModel):
    model: str
    note: str  # what was checked, for the console


def _failed(e: LLMError, endpoint: str) -> EndpointFailed:
    part = FATAL_STATUS.get(e.status or 0, "endpoint")
    what = {"key": "the API key was refused", "model": "the model is not served"}.get(
        part, "the endpoint fails"
    )
    return EndpointFailed(f"LLM preflight at {endpoint}: {what}: {e}", part)


def _pick_model(settings: LLMSettings, models: list[str], endpoint: str) -> Preflight:
    if settings.model is None:
        if len(models) == 1:
            return Preflight(model=models[0], note=f"model {models[0]!r}: the only one {endpoint} serves")
        listed = ", ".join(models[:_LISTED]) + (" ..." if len(models) > _LISTED else "")
        raise LLMConfigError(
            f"no LLM model given and {endpoint} serves {len(models) or 'no'} models"
            f"{': ' + listed if models else ''}: pass --model or set NCU_AGENT_MODEL"
        )
    if models and settings.model not in models:
        listed = ", ".join(models[:_LISTED]) + (" ..." if len(models) > _LISTED else "")
        raise EndpointFailed(
            f"LLM preflight at {endpoint}: the model is not served: {settings.model!r} is not among "
            f"the {len(models)} it lists ({listed})",
            "model",
        )
    return Preflight(model=settings.model, note=f"model {settings.model!r} listed by {endpoint}")


def preflight(settings: LLMSettings, notify: Callable[[str], None] | None = None, **client_args) -> Preflight:
    """Check endpoint, key and model with one request (retried while transient). Raises EndpointFailed (what
    the endpoint refused), or LLMConfigError (nothing to ask: no key, or no model and none to pick)."""
    settings.require_endpoint()
    endpoint = safe_url(settings.base_url)
    probe = settings.model_copy(update={"model": settings.model or "preflight", "max_requests": None})
    client = ChatClient(probe, notify=notify, **client_args)
    try:
        try:
            models = client.list_models()
        except LLMError as e:
            raise _failed(e, endpoint) from None
        if models is not None:
            return _pick_model(settings, models, endpoint)
        model = settings.require_model()  # nothing listed: only a named model can be tried
        try:
            client.complete("Reply with OK.", 1, max_tokens=1)
        except LLMError as e:
            raise _failed(e, endpoint) from None
        return Preflight(model=model, note=f"model {model!r} answered a one-token request at {endpoint}")
    finally:
        client.close()
