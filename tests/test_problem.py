"""The problem loader: bundled problems, bare KernelBench files, and the errors malformed problems raise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.data.paths import kernels_dir
from agent.problem import ProblemError, inspect_problem, load_problem

REPO = Path(__file__).resolve().parent.parent
BUNDLED = sorted(p.name for p in kernels_dir().iterdir() if (p / "problem.toml").is_file())
NEW = ["softmax", "layernorm", "fused_elementwise", "sum_reduction", "matmul_fp16"]

GOOD_REFERENCE = """\
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return x * 2


batch_size = 64
dim = 300


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
"""


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))


def files_under(root: Path) -> set[Path]:
    """Every file and folder under root except bytecode caches (test_failed_load_writes_no_bytecode)."""
    return {p for p in root.rglob("*") if "__pycache__" not in p.parts}


# --- bundled problems ------------------------------------------------------------------------------


def test_the_five_new_problems_are_bundled():
    assert set(NEW) <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_problem_loads(name):
    spec = load_problem(name)
    assert spec.name == name
    assert spec.description
    assert spec.kernel_path is not None and spec.kernel_path.is_file()
    assert spec.small_shapes, "bundled problems need small shapes for the CPU interpreter"
    real = inspect_problem(spec, small=False)
    small = inspect_problem(spec, small=True)
    assert real.bytes_moved > 100 * 2**20, "real sizes should move hundreds of MB"
    if name in NEW:  # inputs, the reference's output and the candidate's fit with room to spare
        assert real.bytes_moved + sum(t.nbytes for t in real.outputs) < 20 * 10**9
    assert real.outputs, "the reference's forward should run on the meta device"
    assert 0 < small.bytes_moved < 2 * 2**20, "small shapes must stay cheap for the interpreter"
    if spec.flops:
        assert real.flops and small.flops and small.flops < real.flops


def test_bundled_problem_resolves_from_kernels_prefix():
    assert load_problem("kernels/softmax").reference_path == kernels_dir() / "softmax" / "reference.py"


def test_matmul_flops_and_small_shapes():
    spec = load_problem("matmul_fp16")
    real = inspect_problem(spec, small=False)
    assert real.flops == 2 * 8192**3
    small = inspect_problem(spec, small=True)
    assert [t.shape for t in small.inputs] == [[140, 90], [90, 150]]
    assert [(t.shape, t.dtype) for t in small.outputs] == [([140, 150], "float16")]
    assert small.flops == 2 * 140 * 150 * 90


def test_sum_reduction_is_not_a_power_of_two():
    spec = load_problem("sum_reduction")
    for small in (False, True):
        (x,) = inspect_problem(spec, small=small).inputs
        assert x.shape[1] & (x.shape[1] - 1) != 0


CHECK_KERNELS = """
import json, sys
from agent.evaluation import triton_hooks as th
th.install()
import torch
from agent.problem import build, import_file, load_problem, load_reference

report = {}
for name in sys.argv[1:]:
    spec = load_problem(name)
    mod = load_reference(spec, small=True)
    model, inputs = build(mod, spec.reference_path, "cpu", 0)
    torch.manual_seed(0)
    new = import_file(spec.kernel_path).ModelNew(*mod.get_init_inputs())
    ref_state, new_state = model.state_dict(), new.state_dict()
    same_params = list(ref_state) == list(new_state) and all(
        torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    ref = model(*inputs)
    fp16 = ref.dtype == torch.float16
    atol = spec.atol if spec.atol is not None else (1e-2 if fp16 else 1e-4)
    rtol = spec.rtol if spec.rtol is not None else (1e-2 if fp16 else 1e-4)
    rows = []
    for k in range(th.max_configs()):
        th.select_config(k)
        th.start_recording()
        out = new(*inputs)
        launches = th.stop_recording()
        close = bool(torch.allclose(out, ref, atol=atol, rtol=rtol))
        rows.append(dict(config=k, launches=launches, close=close,
                         shape=out.shape == ref.shape, dtype=out.dtype == ref.dtype))
    report[name] = dict(same_params=same_params, configs=rows)
print(json.dumps(report))
"""


@pytest.mark.slow
def test_bundled_kernels_match_their_references_for_every_config():
    # A subprocess: the interpreter flag must be set before Triton kernels are defined, and the hooks
    # patch Triton for the whole process.
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_KERNELS, *BUNDLED],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report) == BUNDLED
    for name, result in report.items():
        assert result["same_params"], f"{name}: ModelNew's parameters differ from Model's"
        for row in result["configs"]:
            assert row["launches"], f"{name} config {row['config']}: no Triton kernel ran"
            assert row["shape"] and row["dtype"] and row["close"], f"{name}: {row}"


# --- bare KernelBench files ------------------------------------------------------------------------


def test_bare_kernelbench_file_loads(tmp_path):
    path = tmp_path / "my_problem.py"
    path.write_text(GOOD_REFERENCE)
    spec = load_problem(path)
    assert spec.name == "my_problem"
    assert spec.reference_path == path.resolve()
    assert spec.kernel_path is None and spec.flops is None
    assert spec.shapes_origin == "derived" and spec.small_shapes  # 19200 elements: above the CPU's size
    (small,) = inspect_problem(spec, small=True).inputs
    assert small.shape[0] * small.shape[1] <= 16384
    shapes = inspect_problem(spec, small=False)
    assert [t.shape for t in shapes.inputs] == [[64, 300]]
    assert shapes.bytes_moved == 2 * 64 * 300 * 4


def test_folder_small_shapes_override_globals(tmp_path):
    write(
        tmp_path / "p",
        {
            "reference.py": GOOD_REFERENCE,
            "problem.toml": 'flops = "batch_size * dim"\n[small_shapes]\nbatch_size = 3\ndim = 7\n',
        },
    )
    spec = load_problem(tmp_path / "p")
    assert spec.name == "p" and spec.kernel_path is None
    small = inspect_problem(spec, small=True)
    assert [t.shape for t in small.inputs] == [[3, 7]] and small.flops == 21
    assert inspect_problem(spec, small=False).flops == 64 * 300


# --- malformed problems ----------------------------------------------------------------------------

NO_MODEL = GOOD_REFERENCE.replace("class Model(nn.Module)", "class Reference(nn.Module)")
NO_GET_INPUTS = GOOD_REFERENCE.replace("def get_inputs()", "def make_inputs()")
INPUTS_RAISE = GOOD_REFERENCE.replace(
    "    return [torch.randn(batch_size, dim)]", "    raise ValueError('no inputs today')"
)
INPUTS_STRING = GOOD_REFERENCE.replace("    return [torch.randn(batch_size, dim)]", "    return 'x'")
INPUTS_LIST_OF_STRING = GOOD_REFERENCE.replace(
    "    return [torch.randn(batch_size, dim)]", "    return [torch.randn(3), 'x']"
)
INPUTS_ONLY_INTS = GOOD_REFERENCE.replace("    return [torch.randn(batch_size, dim)]", "    return [1, 2]")
SYNTAX_ERROR = GOOD_REFERENCE.replace("def forward(self, x):", "def forward(self, x)")
IMPORT_RAISES = GOOD_REFERENCE.replace("batch_size = 64", "batch_size = 64 // 0")

# (files the test writes, file the message must name, words the message must contain)
MALFORMED = {
    "missing Model": ({"reference.py": NO_MODEL}, "reference.py", ["`Model`"]),
    "missing get_inputs": ({"reference.py": NO_GET_INPUTS}, "reference.py", ["`get_inputs`"]),
    "get_inputs raises": (
        {"reference.py": INPUTS_RAISE},
        "reference.py",
        ["get_inputs()", "ValueError", "no inputs today", "line"],
    ),
    "get_inputs returns a string": ({"reference.py": INPUTS_STRING}, "reference.py", ["get_inputs()", "str"]),
    "get_inputs returns a non-tensor": (
        {"reference.py": INPUTS_LIST_OF_STRING},
        "reference.py",
        ["non-tensors", "str"],
    ),
    "get_inputs returns only ints": ({"reference.py": INPUTS_ONLY_INTS}, "reference.py", ["no tensor"]),
    "syntax error": ({"reference.py": SYNTAX_ERROR}, "reference.py", ["syntax error", "line 6"]),
    "import raises": ({"reference.py": IMPORT_RAISES}, "reference.py", ["ZeroDivisionError"]),
    "invalid TOML": (
        {"reference.py": GOOD_REFERENCE, "problem.toml": "name = \n"},
        "problem.toml",
        ["not valid TOML"],
    ),
    "unknown problem.toml key": (
        {"reference.py": GOOD_REFERENCE, "problem.toml": 'name = "p"\nsmall_shape = 3\n'},
        "problem.toml",
        ["unknown keys", "small_shape"],
    ),
    "missing reference.py": ({"problem.toml": 'name = "p"\n'}, "problem", ["reference.py"]),
    "small_shapes names a missing global": (
        {"reference.py": GOOD_REFERENCE, "problem.toml": "[small_shapes]\nbatch_size = 3\nseq_len = 5\n"},
        "reference.py",
        ["small_shapes", "`seq_len`"],
    ),
    "flops expression fails": (
        {"reference.py": GOOD_REFERENCE, "problem.toml": 'flops = "2 * M * N"\n'},
        "reference.py",
        ["flops", "'M'"],
    ),
    "small_shapes of the wrong type": (
        {"reference.py": GOOD_REFERENCE, "problem.toml": '[small_shapes]\ndim = "small"\n'},
        "problem.toml",
        ["invalid fields", "small_shapes"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_problem_raises_problem_error(tmp_path, case):
    files, named_file, words = MALFORMED[case]
    folder = tmp_path / "problem"
    write(folder, files)
    before = files_under(tmp_path)
    with pytest.raises(ProblemError) as info:
        load_problem(folder)
    message = str(info.value)
    expected_path = folder if named_file == "problem" else folder / named_file
    assert message.startswith(f"{expected_path}: "), message
    assert info.value.path == expected_path
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert files_under(tmp_path) == before, "a failed load left files behind"


@pytest.mark.parametrize("case", ["missing Model", "get_inputs raises", "syntax error"])
def test_malformed_bare_file_raises_problem_error(tmp_path, case):
    files, _, words = MALFORMED[case]
    path = tmp_path / "bare.py"
    path.write_text(files["reference.py"])
    before = files_under(tmp_path)
    with pytest.raises(ProblemError) as info:
        load_problem(path)
    assert str(info.value).startswith(f"{path}: ")
    for word in words:
        assert word in str(info.value)
    assert files_under(tmp_path) == before


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "no_such_problem"
    with pytest.raises(ProblemError) as info:
        load_problem(missing)
    assert str(info.value) == f"{missing}: no such file or folder (and no bundled problem of that name)"
    assert list(tmp_path.iterdir()) == []


def test_file_that_is_not_a_problem(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ProblemError, match=r"KernelBench \.py file") as info:
        load_problem(path)
    assert str(info.value).startswith(f"{path}: ")


# --- loader defects found in review, fixed -----------------------------------------------------------


def test_failed_load_writes_no_bytecode(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    write(tmp_path / "problem", {"reference.py": NO_MODEL})
    with pytest.raises(ProblemError):
        load_problem(tmp_path / "problem")
    assert not (tmp_path / "problem" / "__pycache__").exists()


def test_nonexistent_path_named_like_a_bundled_problem(tmp_path):
    with pytest.raises(ProblemError, match="no such file"):
        load_problem(tmp_path / "softmax")


def test_unknown_tolerance_key(tmp_path):
    write(tmp_path / "p", {"reference.py": GOOD_REFERENCE, "problem.toml": "[tolerance]\natl = 1e-3\n"})
    with pytest.raises(ProblemError, match="atl"):
        load_problem(tmp_path / "p")
