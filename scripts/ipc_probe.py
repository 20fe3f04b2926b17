"""Can a CUDA IPC handle cross into the candidate's sandbox? (the split layout's transport on a GPU)

python scripts/ipc_probe.py

Two routes, each tried by a plain child process and by one inside the worker's bwrap box (new PID and IPC
namespaces, no capabilities: agent/evaluation/confine.py), which opens the handle and sums the tensor:
PyTorch's own (`torch.multiprocessing.reductions.reduce_tensor` / `rebuild_cuda_tensor`), and the project's
(a `cuMemAlloc` buffer and the driver's handle: agent/evaluation/cuda_ipc.py, what the split layout uses).
Prints one line per try: whether the handle opened and the child saw the judge's values, or the error it
met. Where the project's route does not open in the box, tensors cross as copies through files
(agent/evaluation/runners.py).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.multiprocessing.reductions import reduce_tensor

from agent.evaluation import confine, cuda_ipc

DRIVER_CHILD = """
import json, sys
from agent.evaluation import cuda_ipc
shared = cuda_ipc.SharedTensor.model_validate_json(open(sys.argv[1]).read())
try:
    print("opened; sum", float(cuda_ipc.receive(shared).sum()))
except Exception as e:
    print("failed:", type(e).__name__, str(e)[:300])
"""
CHILD = """
import pickle, sys, torch
from torch.multiprocessing.reductions import rebuild_cuda_tensor
args = pickle.load(open(sys.argv[1], "rb"))
try:
    t = rebuild_cuda_tensor(*args)
    print("opened; sum", float(t.sum()))
except Exception as e:
    print("failed:", type(e).__name__, str(e)[:300])
"""


def _children(route: str, script: Path, arg: Path, box: Path) -> None:
    """`script arg` as a plain child, then in the bwrap box (where bwrap is here); one line each."""
    root = Path(__file__).resolve().parents[1]
    plain = [sys.executable, str(script), str(arg)]
    boxed = confine.box_for(plain, box, [root], gpu=True)
    env = {**os.environ, "PYTHONPATH": str(root)}
    for label, argv in (("plain child", plain), ("bwrap box", boxed)):
        if label == "bwrap box" and boxed == plain:
            print(f"{route}, bwrap box: not tried (no bwrap here)")
            break
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=box, env=env)
        said = (done.stdout.strip() or done.stderr.strip()[-400:]).replace("\n", " | ")
        print(f"{route}, {label}: rc {done.returncode}: {said}")


def main() -> None:
    x = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
    box = Path(tempfile.mkdtemp(prefix="ipc_probe_"))
    print("judge's sum", float(x.sum()), "isolation", confine.isolation().label)
    _, args = reduce_tensor(x)
    (box / "handle.pkl").write_bytes(pickle.dumps(args))
    (box / "child.py").write_text(CHILD)
    _children("torch route", box / "child.py", box / "handle.pkl", box)
    exported = cuda_ipc.Exported()
    shared = exported.share(x)
    torch.cuda.synchronize()
    (box / "shared.json").write_text(shared.model_dump_json())
    (box / "driver_child.py").write_text(DRIVER_CHILD)
    _children("driver route", box / "driver_child.py", box / "shared.json", box)
    exported.release()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
