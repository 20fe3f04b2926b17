"""Can a CUDA IPC handle cross into the candidate's sandbox? (the split layout's transport on a GPU)

python scripts/ipc_probe.py

The judge's process makes a CUDA tensor and its IPC handle (`torch.multiprocessing.reductions.reduce_tensor`);
a child process opens the handle and sums the tensor, first as a plain child, then inside the worker's
bwrap box (new PID and IPC namespaces, no capabilities: agent/evaluation/confine.py). Prints one line per
try: whether the handle opened and the child saw the judge's values, or the error it met. Where it opens
in the box, tensors could cross without copies; where it does not, they cross as copies through files
(agent/evaluation/runners.py), which is what the split layout does.
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


def main() -> None:
    x = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
    _, args = reduce_tensor(x)
    box = Path(tempfile.mkdtemp(prefix="ipc_probe_"))
    handle = box / "handle.pkl"
    handle.write_bytes(pickle.dumps(args))
    script = box / "child.py"
    script.write_text(CHILD)
    print("judge's sum", float(x.sum()), "isolation", confine.isolation().label)
    plain = [sys.executable, str(script), str(handle)]
    boxed = confine.box_for(plain, box, [Path(__file__).resolve().parents[1]], gpu=True)
    for label, argv in (("plain child", plain), ("bwrap box", boxed)):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=box)
        said = (done.stdout.strip() or done.stderr.strip()[-400:]).replace("\n", " | ")
        print(f"{label}: rc {done.returncode}: {said}")
        if argv is plain and boxed == plain:
            print("bwrap box: not tried (no bwrap here)")
            break
    # the project's own route (agent/evaluation/cuda_ipc.py): a cuMemAlloc buffer, the driver's handle
    exported = cuda_ipc.Exported()
    shared = exported.share(x)
    torch.cuda.synchronize()
    (box / "shared.json").write_text(shared.model_dump_json())
    (box / "driver_child.py").write_text(DRIVER_CHILD)
    plain = [sys.executable, str(box / "driver_child.py"), str(box / "shared.json")]
    boxed = confine.box_for(plain, box, [Path(__file__).resolve().parents[1]], gpu=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for label, argv in (("driver route, plain child", plain), ("driver route, bwrap box", boxed)):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=box, env=env)
        said = (done.stdout.strip() or done.stderr.strip()[-400:]).replace("\n", " | ")
        print(f"{label}: rc {done.returncode}: {said}")
    exported.release()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
