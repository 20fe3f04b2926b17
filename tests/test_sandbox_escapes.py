"""Candidate code stays in its box: escapes tried by a real candidate, in bubblewrap's sandbox (full) and
without it (reduced: NCU_AGENT_SANDBOX=off), and the sandbox's pieces (argv, GPU binds, sweep, bytecode).

The escape test runs the evaluation the way the CLI does, in a process started with a (fake) LLM key in its
initial environment, made undumpable by `protect_process`: an honest kernel, then the escaping candidate
(`fixtures/sandbox_escape.py`, run-time defences alone: static checks off) in the same warm worker.
Whatever the escaping candidate's verdict, none of its attempts may take effect.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.evaluation import confine
from agent.evaluation.bootstrap import SourceOnlyLoader
from agent.evaluation.lockdown import planted_bytecode

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agent"
L1 = ROOT / "kernels" / "l1_norm"
ESCAPE = Path(__file__).resolve().parent / "fixtures" / "sandbox_escape.py"
HONEST = Path(__file__).resolve().parent / "candidates" / "simple_l1.py"  # one kernel, no autotune: quick
FORGED_PYC = PACKAGE / "evaluation" / "__pycache__" / "compare.cpython-311.pyc"

DRIVER = """
import json, os, sys
from agent.evaluation.secrets import protect_process
protect_process()
print("PID", os.getpid(), flush=True)
from agent.evaluation.evaluate import evaluate
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
problem = load_problem(sys.argv[1])
with WorkerPool() as pool:
    for path in sys.argv[2:]:
        r = evaluate(problem, open(path).read(), "cpu", seeds=(0,), time=False, static=False, pool=pool)
        print(json.dumps(r.model_dump(mode="json")), flush=True)
"""


@pytest.fixture(params=["full", "reduced"])
def mode(request, monkeypatch):
    monkeypatch.delenv(confine.SANDBOX_ENV, raising=False)
    confine.isolation.cache_clear()
    if request.param == "full" and not confine.isolation().full:
        pytest.skip(f"bubblewrap cannot start here: {confine.isolation().label}")
    if request.param == "reduced":
        monkeypatch.setenv(confine.SANDBOX_ENV, "off")
    yield request.param
    confine.isolation.cache_clear()


def _secret_files(mark: str) -> tuple[Path, list[Path], list[Any]]:
    """A run's records and an LLM cache holding secrets, in a folder any user may enter, open as in a
    live run (their -wal files exist), with what closes them."""
    from agent.llm.cache import LLMCache
    from agent.store import Store

    base = Path(tempfile.mkdtemp(prefix="ncu_agent_test_records_"))
    base.chmod(0o755)
    (base / "run").mkdir(mode=0o755)
    store = Store.open_dir(base / "run")
    store.start_run(f"RECORD-{mark}", "cpu", None, "search", None, {})
    cache = LLMCache(base / "llm-cache.sqlite")
    cache._db().execute("CREATE TABLE leak(x)")
    cache._db().execute("INSERT INTO leak VALUES (?)", (f"CACHE-{mark}",))
    files = [base / "run" / "records.sqlite", base / "llm-cache.sqlite"]
    wal = [Path(f"{f}-wal") for f in files]  # where SQLite keeps the latest writes: the secrets too
    assert all(w.exists() for w in wal)
    return base, files + wal, [store.conn, cache._db()]


def _listeners() -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    for s in (udp, tcp):
        s.setblocking(False)
    return udp, tcp


def _received(udp: socket.socket, tcp: socket.socket) -> list[str]:
    got = []
    with contextlib.suppress(BlockingIOError):
        got.append(f"udp: {udp.recv(1024)!r}")
    try:
        conn, _ = tcp.accept()
        got.append("tcp: a connection")
        conn.close()
    except BlockingIOError:
        pass
    return got


def _escape_source(mark: str, secret_files: list[Path], udp: int, tcp: int) -> str:
    config = {
        "mark": mark,
        "package": str(PACKAGE),
        "secret_files": [str(p) for p in secret_files],
        "udp": udp,
        "tcp": tcp,
    }
    prelude = ESCAPE.read_text().replace(
        next(line for line in ESCAPE.read_text().splitlines() if line.startswith("CONFIG = ")),
        f"CONFIG = {config!r}",
    )
    kernel = HONEST.read_text()
    marker = "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
    assert marker in kernel
    return prelude + "\n" + kernel.replace(marker, marker + "        _escape()\n")


def _attempts(log: str) -> dict[str, str]:
    """ESCAPE lines of the candidate's log: attempt -> 'done ...' or 'blocked ...'."""
    out = {}
    for line in log.splitlines():
        if line.startswith("ESCAPE "):
            name, _, what = line[len("ESCAPE ") :].partition(": ")
            out[name] = what
    return out


def test_escapes_take_no_effect(mode, tmp_path):
    mark = f"escape_{uuid.uuid4().hex[:12]}"
    key = f"sk-fake-{mark}"
    records, secret_files, open_dbs = _secret_files(mark)
    udp, tcp = _listeners()
    pyc_before = FORGED_PYC.read_bytes() if FORGED_PYC.exists() else None
    escape = tmp_path / "escape.py"
    escape.write_text(_escape_source(mark, secret_files, udp.getsockname()[1], tcp.getsockname()[1]))
    escape.chmod(0o644)
    honest = HONEST
    env = {**os.environ, "OPENAI_API_KEY": key, "HF_TOKEN": key, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, str(L1), str(honest), str(escape)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        first, escaped = (json.loads(line) for line in done.stdout.splitlines()[-2:])
        everything = done.stdout + done.stderr
        # nothing secret reached any result, log or record: not the key, not the records, not the cache
        for secret in (key, f"RECORD-{mark}", f"CACHE-{mark}"):
            assert secret not in everything
        assert first["status"] == "accepted", (first["reason"], first.get("log_tail", ""))
        assert first["isolation"] == (
            "full" if mode == "full" else f"reduced: turned off by {confine.SANDBOX_ENV}=off"
        )
        tried = _attempts(escaped["log_tail"])
        assert set(tried) >= {"parent-environ", "any-environ", "tmp-file", "package-file", "forged-pyc"}
        reads = {f"read-{i}" for i in range(len(secret_files))}
        assert set(tried) >= {"udp", "tcp", "child", "fork", *reads}, escaped["log_tail"]
        # reduced: the one that may succeed is a file in /tmp, removed and reported with the candidate
        allowed = {"tmp-file"} if mode == "reduced" else set()
        done_ones = {k for k, v in tried.items() if v.startswith("done")}
        assert done_ones <= allowed, tried
        if "tmp-file" in done_ones:  # rejected; the judge may name the blocked child process first
            assert escaped["status"] == "cheating", escaped["reason"]
            assert escaped["rule"] in ("left-behind", "threads"), escaped["reason"]
            failed = {c["name"] for c in escaped["checks"] if not c["passed"]}
            assert "left-behind" in failed, failed  # the written file is removed and reported either way
        # and none of it took effect
        assert not list(Path("/tmp").glob(f"{mark}*")), "files left in /tmp"
        assert not list(PACKAGE.rglob(f"{mark}*")), "files left in the package"
        assert (FORGED_PYC.read_bytes() if FORGED_PYC.exists() else None) == pyc_before
        assert _received(udp, tcp) == []
        # the evaluations left no worker directory behind
        pid = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PID "))
        assert not list(Path(tempfile.gettempdir()).glob(f"{confine.BOX_PREFIX}{pid}_*"))
    finally:
        udp.close()
        tcp.close()
        for db in open_dbs:
            db.close()
        shutil.rmtree(records, ignore_errors=True)


# --- the sandbox's pieces, without starting a worker ------------------------------------------------


def test_bwrap_argv_binds_only_what_the_worker_needs(tmp_path):
    box = tmp_path / "w" / "box"
    reference = L1 / "reference.py"
    argv = confine.bwrap_argv(
        "/usr/bin/bwrap", ["python", "x.py"], box=box, read_only=[*confine.python_paths(), reference]
    )
    assert argv[-3:] == ["--", "python", "x.py"]
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--tmpfs") + 1] == "/"  # an empty root: nothing is there unless bound
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert writable == [str(box)]
    bound = {argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind-try", "--bind")}
    assert str(PACKAGE) in bound and str(reference) in bound
    assert str(ROOT) not in bound  # the checkout's runs/, configs and tests are not in the box
    for never in (Path.home(), Path.home() / ".cache", ROOT / "runs", Path("/run"), Path("/var/run")):
        assert str(never) not in bound
    assert not any(a.startswith("/dev/nvidia") for a in argv) and "--cap-drop" not in argv


def test_gpu_binds_only_the_visible_gpu(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    nodes, paths = confine.gpu_binds({"CUDA_VISIBLE_DEVICES": "1"}, dev)
    assert (
        str(dev / "nvidia1") in nodes and str(dev / "nvidiactl") in nodes and str(dev / "nvidia-uvm") in nodes
    )
    assert str(dev / "nvidia0") not in nodes and str(dev / "nvidia2") not in nodes
    every, _ = confine.gpu_binds({}, dev)
    assert {str(dev / f"nvidia{i}") for i in range(3)} <= set(every)
    argv = confine.bwrap_argv("/usr/bin/bwrap", ["ncu"], box=tmp_path / "box", read_only=paths, devices=nodes)
    assert argv[argv.index("--dev-bind-try") + 1] == str(dev / "nvidia1")
    assert "--unshare-net" in argv and "--unshare-pid" in argv


def test_ncu_runs_boxed_without_capabilities(tmp_path, monkeypatch):
    monkeypatch.setattr(confine, "bwrap_path", lambda: "/usr/bin/bwrap")
    monkeypatch.setattr(confine, "isolation", lambda: confine.Isolation(full=True))
    ncu = tmp_path / "cuda" / "bin" / "ncu"
    argv = confine.box_for([str(ncu), "-o", "r", "python", "t.py"], tmp_path / "box", [], gpu=True)
    assert argv[argv.index("--cap-drop") + 1] == "ALL"  # root in the box without CAP_SYS_ADMIN and the rest
    assert str(ncu.parent) in argv and argv[-5:] == [str(ncu), "-o", "r", "python", "t.py"]
    monkeypatch.setattr(confine, "isolation", lambda: confine.Isolation(full=False, why="test"))
    assert confine.box_for(["ncu"], tmp_path, [], gpu=True) == ["ncu"]


def test_sweep_removes_only_dead_workers_dirs(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = tmp_path / f"{confine.BOX_PREFIX}{dead.stdout.strip()}_abc"
    live = tmp_path / f"{confine.BOX_PREFIX}{os.getpid()}_abc"
    other = tmp_path / "ncu_agent_worker_notapid"
    for d in (gone, live, other):
        (d / "box").mkdir(parents=True)
    (gone / "box" / "inputs_0.pt").write_bytes(b"x" * 1024)
    assert confine.sweep(tmp_path) == [gone]
    assert not gone.exists() and live.exists() and other.exists()


def test_planted_bytecode_is_found_and_not_used(tmp_path):
    import importlib.machinery
    import importlib.util
    import marshal
    import py_compile

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    source = pkg / "judge_part.py"
    source.write_text("VERDICT = 'checked'\n")
    honest = pkg / "other.py"
    honest.write_text("X = 1\n")
    for s in (source, honest):
        py_compile.compile(str(s), doraise=True)
    cached = Path(importlib.util.cache_from_source(str(source)))
    header = cached.read_bytes()[:16]  # the source's mtime and size: Python would load it
    cached.write_bytes(header + marshal.dumps(compile("VERDICT = 'forged'\n", str(source), "exec")))
    assert planted_bytecode(pkg) == [cached]
    finder = importlib.machinery.FileFinder(str(pkg), (SourceOnlyLoader, [".py"]))
    spec = finder.find_spec("judge_part")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VERDICT == "checked"


def test_require_sandbox_refuses_without_it(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from agent.cli import app

    monkeypatch.setenv(confine.SANDBOX_ENV, "off")
    confine.isolation.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["--require-sandbox", "check", str(L1 / "kernel.py"), "--problem", str(L1)]
        )
    finally:
        confine.isolation.cache_clear()
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "error: --require-sandbox: isolation is reduced: turned off by NCU_AGENT_SANDBOX=off" in said


SOCKET_PROBE = """
import json, socket, sys
from agent.evaluation import lockdown
lockdown._seccomp(block_processes=False, unix_sockets=sys.argv[1] == "1")
got = {}
for name, make in (
    ("inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
    ("inet6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)),
    ("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    ("unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
    ("pair", lambda: socket.socketpair()),
):
    try:
        make()
        got[name] = "open"
    except OSError:
        got[name] = "blocked"
print(json.dumps(got))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux's")
@pytest.mark.parametrize("unix", [False, True])
def test_seccomp_blocks_every_socket_family_but_unix_on_the_gpu(unix):
    """A GPU worker may open Unix-domain sockets (CUDA's driver fails to start without them: error 304 on
    an H200); never a network one. A CPU worker may open none."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SOCKET_PROBE, "1" if unix else "0"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert {k: got[k] for k in ("inet", "inet6", "netlink")} == dict.fromkeys(
        ("inet", "inet6", "netlink"), "blocked"
    )
    assert got["unix"] == got["pair"] == ("open" if unix else "blocked")


CLOSED_TREE_PROBE = """
import json, os, sys, traceback
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import triton
import closedpkg.standard  # imported as root, from a folder no other uid may enter (pyenv under /root)
from agent.evaluation import confine, lockdown
lockdown._keep_python_reachable()
lockdown._drop(confine.worker_uid(), 64)
got = {"uid": os.getuid()}
try:
    import closedpkg.late  # imported after the drop, and re-jits a function of the earlier module
    got["late"] = closedpkg.late.SOURCE_LINES
except Exception as e:
    got["late"] = f"{type(e).__name__}: {e}"
try:
    closedpkg.standard.fails()
except ZeroDivisionError as e:
    got["traceback_line"] = traceback.extract_tb(e.__traceback__)[-1].line
print(json.dumps(got))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the worker drops from root")
def test_sources_imported_before_the_drop_stay_readable(tmp_path):
    """Without bwrap, a worker started as root drops to an unused uid; Python's packages may live where that
    uid cannot enter (pyenv under /root, mode 0700). Modules imported before the drop keep their real
    paths as file names, and Triton reads the source of functions it jits from them after the drop: its
    gluon package, imported at the first launch, jits `triton.language.standard`'s functions (an honest
    kernel 'crashed' in CI with "@jit functions should be defined in a Python file")."""
    closed = tmp_path / "closed"  # like /root: the tree below is open, the way to it is not
    pkg = closed / "site-packages" / "closedpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "standard.py").write_text(
        "import triton\n\n\n@triton.jit\ndef twice(x):\n    return x * 2\n\n\n"
        "def fails():\n    return 1 / 0\n"
    )
    (pkg / "late.py").write_text(
        "from triton.runtime.jit import JITFunction\n\nfrom closedpkg import standard\n\n"
        "SOURCE_LINES = len(JITFunction(standard.twice.fn).raw_src)  # as gluon's jit does\n"
    )
    closed.chmod(0o700)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CLOSED_TREE_PROBE, str(closed / "site-packages")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["uid"] != 0
    assert got["late"] == 3, got  # `twice`'s source, its decorator included, was read
    assert got["traceback_line"] == "return 1 / 0"
