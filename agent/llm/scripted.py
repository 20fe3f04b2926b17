"""A scripted, deterministic "LLM" behind a real OpenAI-compatible HTTP endpoint on loopback.

It drives the real loop end to end where no model can be reached (CI, the GPU machine, demos):

    python -m agent.llm.scripted --port 8765 &
    OPENAI_API_KEY=unused ncu-agent run kernels/l1_norm --llm --base-url http://127.0.0.1:8765/v1 \\
        --model scripted --stages micro

Its "model" reads the [CURRENT CODE] block of the prompt and answers the way the micro stage asks: it adds
one `triton.Config` to the first autotuned kernel (the last config again, with fewer warps), keeping every
original config, so a real candidate comes back in a fenced block with prose around it. A kernel that
already has 6 configs gets a reply with no code, which the loop must record and survive.

For the first stage (a [REFERENCE CODE] block) it answers from a `Script` (`--references DIR --replies
DIR`): it finds which reference file the prompt shows, and answers that problem's requests with its
scripted kernels in turn (`replies/NAME.py`, or `replies/NAME/1.py`, `2.py`, ... with the last one
repeated), so a test can script a wrong first version that a repair then fixes.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.source.variants import autotune_configs, find_kernels

CODE_BLOCK = re.compile(r"\[CURRENT CODE\]\n(`{3,})python\n(.*?)\n\1", re.S)
REFERENCE_BLOCK = re.compile(r"\[REFERENCE CODE\]\n(`{3,})python\n(.*?)\n\1", re.S)


class Script:
    """Scripted first versions: reference text -> problem name -> its kernels, served in turn."""

    def __init__(self, references: dict[str, str], replies: dict[str, list[str]]):
        self.names = {text.strip(): name for name, text in references.items()}
        self.replies = replies
        self.served: dict[str, int] = {}
        self.lock = threading.Lock()

    @classmethod
    def from_dirs(cls, references: Path, replies: Path) -> Script:
        refs = {p.stem: p.read_text() for p in sorted(references.glob("*.py"))}
        kernels: dict[str, list[str]] = {}
        for name in refs:
            folder = replies / name
            if folder.is_dir():
                files = sorted(folder.glob("*.py"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
                kernels[name] = [f.read_text() for f in files]
            elif (replies / f"{name}.py").exists():
                kernels[name] = [(replies / f"{name}.py").read_text()]
        return cls(refs, kernels)

    def next_reply(self, reference: str) -> str | None:
        name = self.names.get(reference.strip())
        if name is None or not self.replies.get(name):
            return None
        with self.lock:
            i = self.served.get(name, 0)
            self.served[name] = i + 1
        versions = self.replies[name]
        return versions[min(i, len(versions) - 1)]


def edit(code: str) -> str | None:
    """The current code with one more autotune config (fewer warps), or None when there is nothing to do."""
    tree = ast.parse(code)
    for kernel in find_kernels(tree).values():
        configs = autotune_configs(kernel)
        if not configs or len(configs) >= 6:
            continue
        last = configs[-1]
        warps = next((k.value.value for k in last.keywords if k.arg == "num_warps"), 4)
        stages = next((k.value.value for k in last.keywords if k.arg == "num_stages"), 3)
        new_warps = max(2, int(warps) // 4)
        if new_warps == warps:
            continue
        meta = ast.unparse(last.args[0]) if last.args else "{}"
        lines = code.splitlines(keepends=True)
        line_end = sum(len(x) for x in lines[: last.end_lineno])
        indent = re.match(r"\s*", lines[last.lineno - 1]).group(0)
        addition = f"{indent}triton.Config({meta}, num_warps={new_warps}, num_stages={stages}),\n"
        return code[:line_end] + addition + code[line_end:]
    return None


def answer(prompt: str, script: Script | None = None) -> str:
    ref = REFERENCE_BLOCK.search(prompt)
    if ref is not None:
        kernel = script.next_reply(ref.group(2)) if script is not None else None
        if kernel is None:
            return "I have no first version for this reference."
        return f"A first Triton version of the reference.\n\n```python\n{kernel.strip()}\n```\n"
    m = CODE_BLOCK.search(prompt)
    new = edit(m.group(2)) if m else None
    if new is None:
        return "The kernel is already well tuned for this stage; I would keep it as it is."
    return (
        "The profile shows low SM throughput with high DRAM throughput: the kernel is memory bound, and "
        "fewer warps per row leave more programs resident. I add one config with fewer warps and keep "
        f"every original config.\n\n```python\n{new}\n```\n"
    )


class _Handler(BaseHTTPRequestHandler):
    delay_s = 0.0  # a slow endpoint, for tests that must act while a request is in flight
    script: Script | None = None

    def log_message(self, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        """The one model it serves: a run that names none uses it (the preflight says so)."""
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "no such path"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
            prompt = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
        except (ValueError, AttributeError):
            self._send(400, {"error": {"message": "invalid JSON request"}})
            return
        n = int(request.get("n") or 1)
        self.server.completions += 1  # type: ignore[attr-defined]  # set by serve(): requests answered
        time.sleep(self.delay_s)
        text = answer(prompt, self.script)
        self._send(
            200,
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "scripted"),
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    for i in range(n)
                ],
                "usage": {
                    "prompt_tokens": len(prompt) // 4,
                    "completion_tokens": n * len(text) // 4,
                    "total_tokens": (len(prompt) + n * len(text)) // 4,
                },
            },
        )

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a run killed mid-request): no one is left to answer


def serve(
    host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0, script: Script | None = None
) -> ThreadingHTTPServer:
    """A server bound to loopback (port 0: any free port); call serve_forever() or run it in a thread.
    `delay_s`: each reply waits that long (a slow endpoint); `script`: first versions to answer with."""
    handler = type("Handler", (_Handler,), {"delay_s": delay_s, "script": script})
    server = ThreadingHTTPServer((host, port), handler)
    server.completions = 0  # type: ignore[attr-defined]  # chat completions asked so far, for tests
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--references", type=Path, help="Folder of reference .py files (first-stage prompts).")
    ap.add_argument("--replies", type=Path, help="Folder of scripted first versions: NAME.py or NAME/N.py.")
    args = ap.parse_args()
    script = Script.from_dirs(args.references, args.replies) if args.references and args.replies else None
    server = serve(port=args.port, script=script)
    print(f"scripted LLM at http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
