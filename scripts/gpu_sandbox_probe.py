"""Which part of a GPU worker's confinement CUDA starts under, one part at a time:

    python3 scripts/gpu_sandbox_probe.py

Each line: a configuration (plain; bwrap's box with the GPU binds; the worker's unused uid; its seccomp
filter; the worker's whole lock-down in the box) and whether `torch.cuda.init()` worked there, with the
error otherwise. Also prints the device nodes and where the driver library is, which the binds must cover.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.evaluation import confine, lockdown  # noqa: E402

INIT = "import torch; torch.cuda.init(); print('cuda ok', torch.cuda.get_device_name())"
UID = "import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); "
SECCOMP = "from agent.evaluation import lockdown; lockdown._seccomp(False, {unix}); "
LOCKDOWN = (
    "from agent.evaluation import lockdown; "
    "print(lockdown.lock_down(lockdown.WorkerSetup(uid={uid}, block_processes=False, unix_sockets=True))); "
)


def _run(label: str, argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        text = (done.stdout + done.stderr).strip().splitlines()
        print(f"{label}: exit {done.returncode}: {' | '.join(text[-3:])[:600]}", flush=True)
    except subprocess.TimeoutExpired:
        print(f"{label}: timed out", flush=True)


def main() -> None:
    nodes = sorted(glob.glob("/dev/nvidia*"))
    print("nodes:", " ".join(f"{p} {oct(os.stat(p).st_mode & 0o777)}" for p in nodes))
    libs = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in libs.splitlines():
        if "libcuda.so" in line:
            path = line.split("=>")[-1].strip()
            print("libcuda:", path, "->", os.path.realpath(path))
    driver = Path("/usr/local/nvidia")
    print("/usr/local/nvidia:", sorted(os.listdir(driver)) if driver.is_dir() else None)
    uid = confine.worker_uid() or 65534
    py = [sys.executable, "-c"]
    bwrap = confine.bwrap_path()
    devices, extra = confine.gpu_binds()
    _base, box = confine.make_box(uid)

    def box_argv(code: str) -> list[str]:
        paths = [*confine.python_paths(), *extra, ROOT]
        return confine.bwrap_argv(str(bwrap), [*py, code], box=box, read_only=paths, devices=devices)

    _run("plain", [*py, INIT])
    _run("uid", [*py, UID.format(uid=uid) + INIT])
    _run("seccomp, no sockets", [*py, SECCOMP.format(unix=False) + INIT])
    _run("seccomp, Unix sockets", [*py, SECCOMP.format(unix=True) + INIT])
    _run("lock_down (uid + seccomp)", [*py, LOCKDOWN.format(uid=uid) + INIT])
    if bwrap:
        _run("bwrap box", box_argv(INIT))
        _run("bwrap box + lock_down", box_argv(LOCKDOWN.format(uid=uid) + INIT))
        wide = confine.bwrap_argv(
            str(bwrap),
            [*py, INIT],
            box=box,
            read_only=[*confine.python_paths(), *extra, ROOT, Path("/usr/local/nvidia"), Path("/etc")],
            devices=devices,
        )
        _run("bwrap box + /usr/local/nvidia + /etc", wide)
    print("devices bound:", devices, "read-only extra:", [str(p) for p in extra])
    print("lockdown module:", lockdown.__file__)


if __name__ == "__main__":
    main()
