"""The report pages in a real browser: headless Chromium (Debian's package, .ci/setup_chromium.sh) loads each
page from a local HTTP server on 127.0.0.1, and we check the DOM it built, its console and its requests.

How console errors are found: Chromium started with `--enable-logging=stderr --v=0` writes every console
message of the page to stderr, one line each, as `[...:INFO:CONSOLE(N)] "message", source: URL (N)`;
console.log, console.error and uncaught exceptions ("Uncaught ReferenceError: ...") all look alike there.
The pages have no scripts, so any CONSOLE line, and any "Uncaught" line, fails the test.
`test_console_detector_catches_errors` loads a page with a deliberate error first, so a Chromium that
stopped logging this way fails the suite instead of passing it silently. The server records every request:
a self-contained page asks for nothing but itself.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_report import copy_real_run, make_batch

from agent.report.page import write_batch_report, write_run_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: run .ci/setup_chromium.sh")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)?\]|Uncaught")


class Server:
    """A local HTTP server over one folder that remembers what was asked of it."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format, *args):  # quiet, but remembered
                requests.append(self.path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    root = tmp_path / "www"
    root.mkdir()
    server = Server(root)
    try:
        yield root, server
    finally:
        server.close()


def chromium(args: list[str], profile: Path, timeout_s: float = 120) -> tuple[str, str]:
    """Run Chromium in its own session; on a timeout, kill its whole process group (renderers included)."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish in {timeout_s} s: {' '.join(cmd)}")
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err[-2000:]}"
    return out, err


def load(url: str, profile: Path) -> tuple[str, list[str]]:
    """The DOM Chromium built for `url`, and the console lines it logged."""
    dom, log = chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", url], profile)
    return dom, [line for line in log.splitlines() if CONSOLE.search(line)]


def screenshot(url: str, profile: Path, out: Path) -> tuple[int, int]:
    chromium([f"--screenshot={out}", "--window-size=1400,3000", url], profile)
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])  # IHDR width, height


def test_console_detector_catches_errors(served, tmp_path: Path):
    root, server = served
    (root / "bad.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><p>x</p>'
        '<script>console.error("deliberate"); notAFunction();</script></body></html>'
    )
    dom, console = load(server.url("bad.html"), tmp_path / "profile")
    assert "<p>x</p>" in dom
    assert any("deliberate" in line for line in console)
    assert any("Uncaught ReferenceError" in line for line in console)


@pytest.mark.slow
def test_run_page_in_browser(served, tmp_path: Path):
    root, server = served
    run_dir = copy_real_run(root / "l1_norm")
    write_run_report(run_dir)
    url = server.url("l1_norm/report.html")
    dom, console = load(url, tmp_path / "profile")
    assert console == []
    assert server.requests == ["/l1_norm/report.html"]  # nothing else: no scripts, fonts, images
    assert dom.count("<svg") == 3  # candidates over time, speedup, roofline
    assert '<figure class="plot timeline">' in dom and '<figure class="plot roofline">' in dom
    for table in ('<table class="meta"', '<table class="metrics"', '<table class="candidates"'):
        assert table in dom
    assert '<pre class="diff">' in dom and 'class="hl"' in dom
    assert dom.count('<details class="prompt"') == 3
    shot = tmp_path / "run.png"
    assert screenshot(url, tmp_path / "profile", shot) == (1400, 3000)
    assert shot.stat().st_size > 50_000  # a blank page is a few KB


@pytest.mark.slow
def test_batch_page_in_browser(served, tmp_path: Path):
    root, server = served
    batch = make_batch(root / "synthetic_batch")
    write_batch_report(batch)
    url = server.url("synthetic_batch/report.html")
    dom, console = load(url, tmp_path / "profile")
    assert console == []
    assert server.requests == ["/synthetic_batch/report.html"]
    assert '<table class="batch"' in dom and dom.count("<svg") == 1
    assert re.findall(r'<tr class="(accepted|rejected)">', dom) == [
        "accepted",
        "accepted",
        "rejected",
        "rejected",
    ]
    links = re.findall(r'<a href="([^"]+/report\.html)">', dom)
    assert links == [f"problems/{n}/report.html" for n in ("l1_norm", "synthetic_cpu", "synthetic_failed")]
    for link in links:  # each problem's page loads too, cleanly
        sub_dom, sub_console = load(server.url(f"synthetic_batch/{link}"), tmp_path / "profile")
        assert sub_console == [] and '<table class="candidates"' in sub_dom
    shot = tmp_path / "batch.png"
    assert screenshot(url, tmp_path / "profile", shot) == (1400, 3000)
