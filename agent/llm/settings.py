"""How to reach the LLM, and how much of it to use: one pydantic model, loaded from four layers.

Lowest to highest: built-in defaults < environment (OPENAI_API_KEY, OPENAI_BASE_URL, NCU_AGENT_*) <
the TOML config file's [llm] table < command-line flags. A flag given as None was not given and never
overrides. Every value remembers its layer, so a bad one is reported with where it came from.

The API key is a SecretStr: it is never printed, logged, stored in the run records or in the cache.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from agent.evaluation.secrets import environ  # the key, moved out of os.environ at start

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CACHE_PATH = Path("~/.cache/ncu-agent/llm-cache.sqlite")

# Environment variables, lowest priority first within the environment layer: an NCU_AGENT_* variable
# beats the OPENAI_* one for the same field.
ENV_VARS: tuple[tuple[str, str], ...] = (
    ("OPENAI_BASE_URL", "base_url"),
    ("NCU_AGENT_BASE_URL", "base_url"),
    ("OPENAI_API_KEY", "api_key"),
    ("NCU_AGENT_API_KEY", "api_key"),
    ("NCU_AGENT_MODEL", "model"),
    ("NCU_AGENT_TEMPERATURE", "temperature"),
    ("NCU_AGENT_MAX_TOKENS", "max_tokens"),
    ("NCU_AGENT_SAMPLES", "samples"),
    ("NCU_AGENT_TIMEOUT", "timeout_s"),
    ("NCU_AGENT_MAX_ATTEMPTS", "max_attempts"),
    ("NCU_AGENT_CONCURRENCY", "concurrency"),
    ("NCU_AGENT_MAX_REQUESTS", "max_requests"),
    ("NCU_AGENT_MAX_TOKENS_TOTAL", "max_tokens_total"),
    ("NCU_AGENT_MAX_REPLY_CHARS", "max_reply_chars"),
    ("NCU_AGENT_REPAIR_ATTEMPTS", "repair_attempts"),
    ("NCU_AGENT_LLM_CACHE", "cache_path"),
    ("NCU_AGENT_NO_CACHE", "use_cache"),  # inverted: NCU_AGENT_NO_CACHE=1 -> use_cache=false
    ("NCU_AGENT_NO_API_KEY", "no_api_key"),
    ("NCU_AGENT_MAX_ENDPOINT_ERRORS", "max_endpoint_errors"),
)
_INVERTED_ENV = {"NCU_AGENT_NO_CACHE"}

# The command-line flag of each field, for error messages.
FLAGS: dict[str, str] = {
    "base_url": "--base-url",
    "model": "--model",
    "temperature": "--temperature",
    "max_tokens": "--max-tokens",
    "samples": "--samples",
    "timeout_s": "--timeout",
    "max_requests": "--max-requests",
    "max_tokens_total": "--max-tokens-total",
    "use_cache": "--no-cache",
    "cache_path": "--llm-cache",
    "no_api_key": "--no-api-key",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class LLMConfigError(ValueError):
    """A setting is missing or invalid; the message names the field, the value and where it came from."""


def safe_url(url: str) -> str:
    """The URL without user:password and query string, which may carry credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class LLMSettings(BaseModel):
    """Where the OpenAI-compatible endpoint is, which model, how to sample, and the run's budget."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, validate_default=True, use_attribute_docstrings=True
    )

    base_url: str = DEFAULT_BASE_URL
    """OpenAI-compatible endpoint, up to and including /v1."""
    api_key: SecretStr | None = None
    """Never printed or stored. A server that needs none is reached with `no_api_key`."""
    no_api_key: bool = False
    """The server needs no key (a key set anyway is not sent): said explicitly, so that a forgotten key is
    never mistaken for a keyless server."""
    model: str | None = None
    """Model name as the endpoint knows it; required to use the LLM."""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Sampling temperature."""
    max_tokens: int = Field(8192, gt=0)
    """Per-reply token limit (reasoning models need room to think)."""
    samples: int = Field(4, ge=1, le=16)
    """Replies asked for per prompt (the API's `n`)."""
    timeout_s: float = Field(300.0, gt=0)
    """Per-request timeout, seconds."""
    max_attempts: int = Field(4, ge=1, le=20)
    """Tries per request, the first included."""
    concurrency: int = Field(4, ge=1, le=64)
    """Parallel requests when the endpoint ignores `n`."""
    max_requests: int | None = Field(None, ge=1)
    """Budget: HTTP requests per run, retries included (None: unlimited)."""
    max_tokens_total: int | None = Field(None, ge=1)
    """Budget: prompt + completion tokens per run (None: unlimited)."""
    max_reply_chars: int = Field(200_000, ge=100)
    """Longer replies are recorded truncated and not used."""
    max_endpoint_errors: int = Field(3, ge=1, le=100)
    """Requests in a row failing after their retries (5xx, timeouts, bad bodies) before the run fails."""
    repair_attempts: int = Field(2, ge=0, le=10)
    """Repair requests per failed candidate."""
    cache_path: Path = DEFAULT_CACHE_PATH
    """SQLite response cache, shared by runs."""
    use_cache: bool = True
    """Read replies from the cache (they are written either way)."""
    retry_after_cap_s: float = Field(60.0, gt=0)
    """Longest wait honoured from a Retry-After header."""
    backoff_base_s: float = Field(1.0, ge=0)
    """First retry delay when the server gives no Retry-After; doubles each time."""
    backoff_max_s: float = Field(30.0, ge=0)
    """Longest retry delay when the server gives no Retry-After."""

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.openai.com/v1")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v.strip() if v is not None else None

    @field_validator("cache_path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        return v.expanduser()

    def source_of(self, field: str) -> str:
        """Where the field's value came from: 'default', 'env NAME', 'file PATH', 'flag --x'."""
        return self._sources.get(field, "default")

    def require_model(self) -> str:
        if not self.model:
            raise LLMConfigError(
                "no LLM model given: pass --model, set NCU_AGENT_MODEL, or set `model` "
                "in the config file's [llm] table"
            )
        return self.model

    def require_endpoint(self) -> None:
        """Refuse a run that would quietly reach the wrong place or go without a key it needs."""
        if self.api_key is None and not self.no_api_key:
            where = "" if self.source_of("base_url") != "default" else " and no endpoint (--base-url) is set"
            raise LLMConfigError(
                f"no LLM API key{where}: set OPENAI_API_KEY or NCU_AGENT_API_KEY (or `api_key_env` in the "
                "config file's [llm] table), and --base-url / OPENAI_BASE_URL for a server other than "
                "api.openai.com; a server that needs no key: pass --no-api-key (or `no_api_key = true`)"
            )

    def describe(self) -> str:
        """One line for the run banner: endpoint, model, sampling, budget. Never the key."""
        budget = []
        if self.max_requests is not None:
            budget.append(f"{self.max_requests} requests")
        if self.max_tokens_total is not None:
            budget.append(f"{self.max_tokens_total} tokens")
        key = "no key needed" if self.no_api_key else "key set" if self.api_key else "no key"
        cache = f"cache {self.cache_path}" if self.use_cache else "cache off (writes only)"
        return (
            f"{self.model or '<no model>'} at {safe_url(self.base_url)} ({key}), {self.samples} samples, "
            f"T={self.temperature:g}, max_tokens {self.max_tokens}, "
            f"budget {' and '.join(budget) or 'unlimited'}, {cache}"
        )

    def safe_dict(self) -> dict[str, Any]:
        """Everything but the key, for the run record."""
        out = self.model_dump(mode="json", exclude={"api_key"})
        out["base_url"] = safe_url(self.base_url)
        out["api_key_set"] = self.api_key is not None and not self.no_api_key
        return out


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, field in ENV_VARS:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue  # `export X=` is a common way of unsetting
        value: Any = raw.strip()
        if name in _INVERTED_ENV:
            if value.lower() not in _TRUE | _FALSE:
                raise LLMConfigError(
                    f"invalid LLM setting {name}={raw!r} (from env {name}): expected 1/0, "
                    f"true/false, yes/no or on/off"
                )
            value = value.lower() in _FALSE
        values[field] = value
        sources[field] = f"env {name}"
    return values, sources


def _file_layer(
    path: Path, env: Mapping[str, str], key_given: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    where = f"file {path}"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LLMConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LLMConfigError(f"config file {path} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise LLMConfigError(f"config file {path} is not valid TOML: {e}") from None
    table = data.get("llm", {})
    if not isinstance(table, dict):
        raise LLMConfigError(f"config file {path}: [llm] must be a table, not {type(table).__name__}")
    values = dict(table)
    key_env = values.pop("api_key_env", None)
    if key_env is not None:
        if not isinstance(key_env, str) or not key_env:
            raise LLMConfigError(
                f"invalid LLM setting 'api_key_env' = {key_env!r} (from {where}): "
                f"expected the name of an environment variable"
            )
        if env.get(key_env):
            values["api_key"] = env[key_env]
        elif not key_given:
            raise LLMConfigError(f"the config file {path} says the API key is in ${key_env}, which is unset")
    cache = values.get("cache_path")
    if isinstance(cache, str) and not Path(cache).expanduser().is_absolute():
        values["cache_path"] = str(path.parent / cache)  # relative to the file, not to where we run
    sources = {k: (f"{where} (via ${key_env})" if k == "api_key" and key_env else where) for k in values}
    return values, sources


def _describe_error(err: dict[str, Any], values: dict[str, Any], sources: dict[str, str]) -> str:
    field = str(err["loc"][0]) if err.get("loc") else "?"
    source = sources.get(field, "default")
    if field == "api_key":
        shown = "<hidden>"
    elif field in values:
        shown = repr(values[field])
    else:
        shown = "<missing>"
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        valid = ", ".join(sorted([*LLMSettings.model_fields, "api_key_env"]))
        return f"unknown LLM setting {field!r} (from {source}); valid settings: {valid}"
    return f"invalid LLM setting {field!r} = {shown} (from {source}): {msg}"


def load_llm_settings(
    config_path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
) -> LLMSettings:
    """Defaults < environment < config file ([llm] table) < overrides (CLI flags; None = not given).
    `api_key`: the key a batch's driver handed its job (agent/batch/key_channel.py), above every layer.

    Raises LLMConfigError naming each bad field, its value (never the key's) and the layer it came from.
    """
    if env is None:
        env = environ()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers = [_env_layer(env)]
    if config_path is not None:
        layers.append(_file_layer(Path(config_path).expanduser(), env, key_given=api_key is not None))
    flag_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers.append((flag_values, {k: f"flag {FLAGS.get(k, '--' + k.replace('_', '-'))}" for k in flag_values}))
    if api_key is not None:
        layers.append(({"api_key": api_key}, {"api_key": "the batch's driver"}))
    for layer_values, layer_sources in layers:
        values.update(layer_values)
        sources.update(layer_sources)
    try:
        settings = LLMSettings.model_validate(values)
    except ValidationError as e:
        problems = [_describe_error(err, values, sources) for err in e.errors()]
        raise LLMConfigError("; ".join(problems)) from None
    settings._sources = sources
    return settings


def api_key_value(settings: LLMSettings) -> str:
    """The key to send: a placeholder when the server needs none (the client library insists on one)."""
    if settings.api_key is None or settings.no_api_key:
        return "no-key"
    return settings.api_key.get_secret_value()
