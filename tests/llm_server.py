"""A scripted OpenAI-compatible server on 127.0.0.1, for testing the LLM path over real HTTP.

openai 3.x talks through its own HTTP stack, which respx cannot intercept, so the tests run a real server:
a ThreadingHTTPServer on port 0 in a background thread. Each POST to /v1/chat/completions (or
/chat/completions) takes the next behaviour off a queue; a request with none left is answered 400 and
counted in `unexpected`, so a test that makes one request too many fails loudly. Every request body and
its headers are kept. GET /v1/models answers `models` (None: 404, as on a server that does not list them)
or `models_error` when set.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS = ("/v1/chat/completions", "/chat/completions")


@dataclass
class Behaviour:
    """One scripted response: status, headers, body (bytes, or a JSON-able object), after a delay."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    make: Callable[[dict[str, Any]], Any] | None = None  # builds the body from the request body


def completion(
    *contents: str | None,
    model: str = "test-model",
    usage: dict[str, int] | None = None,
    finish_reason: str = "stop",
    reasoning: str | None = None,
) -> dict[str, Any]:
    """A chat.completion object with one choice per content (None: a message with no content)."""
    choices = []
    for i, content in enumerate(contents):
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        choices.append({"index": i, "message": message, "finish_reason": finish_reason})
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage
        if usage is not None
        else {
            "prompt_tokens": 100,
            "completion_tokens": 50 * len(contents),
            "total_tokens": 100 + 50 * len(contents),
        },
    }


# --- the behaviours the tests script ----------------------------------------------------------------
def reply(*contents: str | None, **kwargs: Any) -> Behaviour:
    """A normal 200 reply with exactly these choices, whatever `n` was asked."""
    return Behaviour(body=completion(*contents, **kwargs))


def reply_n(content: str | Callable[[int], str]) -> Behaviour:
    """A reply honouring the request's `n`: content(i) (or the same content) for each choice."""

    def make(request: dict[str, Any]) -> Any:
        n = int(request.get("n") or 1)
        return completion(*[content(i) if callable(content) else content for i in range(n)])

    return Behaviour(make=make)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Behaviour:
    return Behaviour(
        status=status,
        headers=headers or {},
        body={"error": {"message": message, "type": "test_error", "code": None}},
    )


def rate_limited(retry_after: str = "1") -> Behaviour:
    return error(429, "Rate limit reached for test-model", {"Retry-After": retry_after})


def slow(delay_s: float, then: Behaviour | None = None) -> Behaviour:
    """Answer only after delay_s (longer than the client's timeout: it gives up first)."""
    b = then or reply("too late")
    return Behaviour(status=b.status, body=b.body, headers=b.headers, delay_s=delay_s, make=b.make)


def raw(body: bytes, status: int = 200, content_type: str = "application/json") -> Behaviour:
    return Behaviour(status=status, body=body, headers={"Content-Type": content_type})


class LLMServer:
    """Start with `start()`, point the client at `base_url`, script with `script(...)`."""

    def __init__(self) -> None:
        self.queue: deque[Behaviour] = deque()
        self.requests: list[dict[str, Any]] = []  # parsed JSON bodies (or {"_raw": text})
        self.headers: list[dict[str, str]] = []
        self.unexpected = 0
        self.models: list[str] | None = ["test-model"]
        self.models_error: Behaviour | None = None
        self.required_key: str | None = None  # set: any other Authorization is answered 401
        self.model_requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def script(self, *behaviours: Behaviour) -> LLMServer:
        with self._lock:
            self.queue.extend(behaviours)
        return self

    def _next(self, request: dict[str, Any], headers: dict[str, str]) -> Behaviour | None:
        with self._lock:
            self.requests.append(request)
            self.headers.append(headers)
            if not self.queue:
                self.unexpected += 1
                return None
            return self.queue.popleft()

    def start(self) -> LLMServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    headers = {"Content-Type": "application/json", **headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

            def _refused(self) -> bool:
                key = server.required_key
                if key is None or self.headers.get("Authorization") == f"Bearer {key}":
                    return False
                self._send(401, b'{"error": {"message": "Incorrect API key provided"}}', {})
                return True

            def do_GET(self) -> None:
                if self._refused():
                    return
                if self.path.split("?")[0] not in ("/v1/models", "/models"):
                    self._send(404, b'{"error": {"message": "no such path"}}', {})
                    return
                server.model_requests += 1
                b = server.models_error
                if b is not None:
                    body = b.body if isinstance(b.body, bytes) else json.dumps(b.body).encode()
                    self._send(b.status, body, b.headers)
                elif server.models is None:
                    self._send(404, b'{"error": {"message": "not found"}}', {})
                else:
                    data = [{"id": m, "object": "model", "owned_by": "test"} for m in server.models]
                    self._send(200, json.dumps({"object": "list", "data": data}).encode(), {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                text = self.rfile.read(length).decode("utf-8", "replace")
                if self._refused():
                    return
                if self.path.split("?")[0] not in PATHS:
                    self._send(404, b'{"error": {"message": "no such path"}}', {})
                    return
                try:
                    request = json.loads(text)
                except ValueError:
                    request = {"_raw": text}
                b = server._next(request, {k.lower(): v for k, v in self.headers.items()})
                if b is None:
                    self._send(400, b'{"error": {"message": "test server: no scripted reply left"}}', {})
                    return
                if b.delay_s:
                    time.sleep(b.delay_s)
                body = b.make(request) if b.make else b.body
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self._send(b.status, data, b.headers)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
            name="llm-test-server",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def closed_port_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
