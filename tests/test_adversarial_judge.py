"""The second adversarial corpus (tests/adversarial/judge/): cheats written against the judge's own code,
each caught at run time (static checks off) for the right reason; the honest candidates of
tests/candidates/honest_*.py accepted with the static checks on, as `ncu-agent check` runs them.

Each corpus file starts with a header:
    # exploit: what it does
    # problem: kernels/...        (default kernels/l1_norm)
    # layout: one-process          (optional: judge and candidate in one process, the GPU path's layout)
    # runtime: RULE STATUS         the result with the static checks off, on the CPU
    # reason: TEXT                 found in the reason or in a failed check's detail
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent.evaluation import accounting, draws
from agent.evaluation.evaluate import evaluate
from agent.evaluation.verdicts import exit_code
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
from agent.records import Status
from agent.source.device_branches import device_branches

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "adversarial" / "judge"
ENTRIES = sorted(CORPUS.glob("*.py"))
HONEST = sorted((HERE / "candidates").glob("honest_*.py"))

# Every class of cheat that got through before, and the file that carries it.
CLASSES = {
    "re-entry through torch.tensor(seq)": "reentry_tensor_seq.py",
    "re-entry through x.new_tensor(seq)": "reentry_new_tensor.py",
    "re-entry through x[obj]": "reentry_index.py",
    "re-entry through torch.empty((M, obj))": "reentry_empty_shape.py",
    "re-entry through copy.deepcopy": "reentry_deepcopy.py",
    "helper under a file name in Triton's folder": "triton_file_name.py",
    "numpy over data_ptr memory": "numpy_data_ptr.py",
    "numpy.matmul": "numpy_matmul.py",
    "Python loop over float(v)": "python_float_loop.py",
    "child process": "child_process.py",
    "empty-grid launch": "empty_grid.py",
    "NaN-poison probe": "nan_poison_probe.py",
    "deterministic-flag probe": "deterministic_probe.py",
    "call counter": "call_counter.py",
    "fixed-width cap": "fixed_width_cap.py",
    "x.is_cuda branch": "is_cuda_branch.py",
    "TRITON_INTERPRET branch": "interpreter_branch.py",
    "fp16 accumulator when K >= 1024": "fp16_accumulator.py",
    "cache on 4 sampled elements": "cache_sampled_elements.py",
    "cache on (hash(x), x._version)": "cache_hash_version.py",
    "global forward hook in the one-process layout": "global_forward_hook.py",
}


def header(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, sep, value = line[2:].partition(":")
        if sep and key.strip().isidentifier():
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
def pool(full_draws):
    with WorkerPool() as p:
        yield p


def test_corpus_covers_every_class():
    names = {p.name for p in ENTRIES}
    assert not {c: f for c, f in CLASSES.items() if f not in names}
    for path in ENTRIES:
        assert {"exploit", "runtime", "reason"} <= set(header(path)), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.stem)
def test_cheat_caught_at_run_time(path, pool):
    h = header(path)
    rule, status = h["runtime"].split()
    problem = load_problem(h.get("problem", "kernels/l1_norm"))
    one_process = h.get("layout") == "one-process"
    result = evaluate(
        problem,
        path.read_text(),
        "cpu",
        seeds=(0,),
        static=False,
        pool=None if one_process else pool,
        split=not one_process,
        timeout_s=240,
    )
    assert (result.rule, result.status.value) == (rule, status), f"{path.name}: {result.reason}"
    texts = [result.reason] + [c.detail for c in result.checks if not c.passed]
    assert any(h["reason"] in t for t in texts), f"{path.name}: {h['reason']!r} not in {texts}"


@pytest.mark.slow
@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_candidate_accepted(path, pool):
    result = evaluate(load_problem("kernels/l1_norm"), path.read_text(), "cpu", seeds=(0,), pool=pool)
    assert result.accepted, f"{path.name}: {result.reason}"
    assert exit_code(result.status) == 0


# --- the pieces, in this process ----------------------------------------------------------------------------


def test_work_meter_sees_ops_inside_allowed_ops_and_trusts_no_file_name():
    """An op run from inside torch.tensor(seq) is seen; a function whose code names a file in Triton's
    folder is the candidate's all the same; object construction is no op."""
    import os
    import types

    import triton

    accounting.snapshot_trusted()

    def means(x):
        return x.abs().mean(dim=1)

    disguised = types.FunctionType(
        means.__code__.replace(co_filename=os.path.join(os.path.dirname(triton.__file__), "x.py")), {}
    )

    class Seq:
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return 2

        def __getitem__(self, i):
            if i >= 2:
                raise IndexError
            return float(self.x[i].sum())

    x = torch.randn(2, 8)
    report = accounting.WorkReport()
    with torch.no_grad(), accounting.WorkMeter(report):
        torch.device("cpu"), torch.Size([2]), torch.empty_like(x)
        torch.tensor(Seq(x))
    assert set(report.computed) == {"sum"}
    report = accounting.WorkReport()
    with accounting.WorkMeter(report):
        disguised.__globals__.update(vars(torch.nn.functional))  # a fresh, untrusted namespace
        disguised(x)
    assert {"abs", "mean"} <= set(report.computed)


def test_allowed_ops_policy_plugs_in():
    x = torch.randn(4, 4)
    report = accounting.WorkReport()
    with accounting.WorkMeter(report, allowed=accounting.STRICT_ALLOWED | {"mm"}):
        x @ x
        x + x
    assert set(report.computed) == {"add"}


def test_device_branches_only_when_the_arms_do_different_work():
    src = (
        "def f(x, k):\n"
        "    if x.is_cuda:\n"
        "        torch.cuda.synchronize()\n"
        "    block = 1024 if x.is_cuda else 64\n"
        "    if x.device.type == 'cuda':\n"
        "        k[(1,)](x, BLOCK=128)\n"
        "    else:\n"
        "        k[(1,)](x, BLOCK=16)\n"
        "    if os.environ.get('TRITON_INTERPRET'):\n"
        "        return x.clone()\n"
    )
    found = device_branches(src)
    assert [b.line for b in found] == [9]


def test_a_device_query_chain_is_not_work_but_a_call_hidden_in_an_arm_is():
    liger = (  # Liger-Kernel's infer_device: queries choosing a device name
        "def infer_device():\n"
        "    if torch.cuda.is_available():\n"
        "        return 'cuda'\n"
        "    elif is_npu_available():\n"
        "        return 'npu'\n"
        "    else:\n"
        "        return 'cpu'\n"
    )
    assert device_branches(liger) == []
    xpu_only = "def f(x, args):\n    if x.device.type == 'xpu':\n        set_large_grf_mode(args)\n"
    assert device_branches(xpu_only) == []  # neither the CPU nor the CUDA target takes that arm
    sm_count = (  # Liger's rms_norm: an elif for another device queries its core count
        "def f(x):\n"
        "    n = 1\n"
        "    if x.device.type == 'cuda':\n"
        "        n = torch.cuda.get_device_properties(x.device).multi_processor_count\n"
        "    elif x.device.type == 'npu':\n"
        "        n = get_npu_core_count()\n"
    )
    assert device_branches(sm_count) == []
    cpu_arm = sm_count + "    else:\n        n = torch_path(x)\n"  # the arm the CPU takes still counts
    assert [b.only_one for b in device_branches(cpu_arm)] == ["torch_path"]
    hidden = (  # work tucked into a condition inside the GPU arm still counts
        "def forward(x):\n"
        "    if x.is_cuda:\n"
        "        if is_cheat(x):\n"
        "            pass\n"
        "        return 'cuda'\n"
        "    return 'cpu'\n"
    )
    assert [b.only_one for b in device_branches(hidden)] == ["is_cheat"]


def test_thresholds_and_draw_plans():
    src = "def forward(x):\n    K = x.shape[1]\n    acc16 = K >= 1024\n    if x.numel() < 1:\n        pass\n"
    assert draws.thresholds(src) == [(1024, frozenset({"K"}))]
    plans = draws.plans({"M": 140, "K": 90}, {"M": 8192, "K": 8192}, draws.thresholds(src))
    whys = [w for w, _ in plans]
    assert whys == [
        "K=1025, above the threshold 1024 in the source",
        "M at its real size 8192",
        "K at its real size 8192",
    ]
    unnamed = draws.plans({"M": 140, "K": 90}, {"M": 8192, "K": 8192}, [(2048, frozenset({"n"}))])
    assert len(unnamed) == 4  # the comparison names no shape global: above it on each


def test_scaling_check():
    flat = [draws.Sample("small", 100, 400, 0.3, 15), draws.Sample("big", 10_000, 40_000, 0.35, 15)]
    assert draws.scaling_check(flat).passed
    loop = [draws.Sample("small", 100, 400, 0.3, 115), draws.Sample("big", 10_000, 40_000, 0.4, 10_015)]
    assert not draws.scaling_check(loop).passed
    host = [draws.Sample("small", 100, 400, 0.3, 15)] + [draws.Sample("big", 10_000, 40_000, 40.0, 15)] * 2
    assert "CPU time" in draws.scaling_check(host).detail
    pause = [draws.Sample("small", 100, 400, 0.3, 15), draws.Sample("big", 10_000, 40_000, 40.0, 15)]
    assert draws.scaling_check(pause).passed  # one slow call alone is no evidence


def test_exit_codes_are_defined_once():
    assert [exit_code(s) for s in (Status.ACCEPTED, Status.CHEATING, Status.UNDECIDED)] == [0, 1, 3]
