"""The fused comparison kernel (agent/evaluation/compare_kernel.py) says what the PyTorch comparison says.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors; with one, the same tests run it on
the GPU (the tensors are made on the device there), so `pytest -m gpu` is not needed to cover it.
"""

from __future__ import annotations

import math

import pytest
import torch

from agent.evaluation import compare as verify
from agent.evaluation import compare_kernel

DEV = "cuda" if torch.cuda.is_available() else "cpu"
NAN, INF = float("nan"), float("inf")


def _pair(n: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, generator=g) * 3
    out = ref + torch.randn(n, generator=g) * 1e-5
    return out.to(dtype).to(DEV), ref.to(dtype).to(DEV)


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float, float]]:
    cases = []
    for dtype in compare_kernel.FUSED_DTYPES:
        atol, rtol = verify.tolerance(dtype)
        for n in (1, 7, compare_kernel.BLOCK, 3 * compare_kernel.BLOCK + 5):
            out, ref = _pair(n, dtype, seed=n)
            cases.append((f"{dtype} n={n} close", out, ref, atol, rtol))
        out, ref = _pair(5000, dtype, seed=1)
        out[17] = ref[17] + 0.5  # one element far off: the worst, unique
        out[4000] = ref[4000] - 0.25
        cases.append((f"{dtype} two bad", out, ref, atol, rtol))
        out, ref = _pair(5000, dtype, seed=2)
        out[10:20] = NAN  # unwritten (poison)
        ref[30], out[30] = INF, INF  # the same Inf: fine
        ref[31], out[31] = -INF, INF  # an Inf mismatch
        ref[40], out[40] = NAN, NAN
        ref[50] = 0.0  # |ref| <= atol: left out of the relative error
        out[50] = atol / 2
        cases.append((f"{dtype} non-finite", out, ref, atol, rtol))
        out, ref = _pair(300, dtype, seed=3)
        out[:], ref[:] = NAN, NAN  # nothing finite: the worst stays -inf
        cases.append((f"{dtype} all NaN", out, ref, atol, rtol))
    return cases


CASES = _cases()
# The interpreter computes masked-off lanes too (inf - inf there): numpy's warnings, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fused_summary_matches_pytorch(case):
    _, out, ref, atol, rtol = case
    fused = compare_kernel.chunk_summary(out, ref, atol, rtol).tolist()
    plain = verify._chunk_summary(out, ref, atol, rtol).tolist()
    assert fused[:2] == plain[:2]  # non-finite and out-of-tolerance counts: exact
    for x, y in zip(fused[2:5], plain[2:5], strict=True):  # max abs err, max rel err, worst excess
        assert x == y or math.isclose(x, y, rel_tol=1e-6), (fused, plain)
    if plain[4] > -INF and plain[1] <= 2:  # a unique worst element: the same place and values
        assert fused[5:] == plain[5:]


def test_fusable_only_for_flat_contiguous_same_dtype_cuda_floats():
    a = torch.zeros(8, device=DEV)
    assert compare_kernel.fusable(a, a) == (DEV == "cuda")
    if DEV == "cuda":
        assert not compare_kernel.fusable(a.double(), a.double())
        assert not compare_kernel.fusable(a, a.half())
        assert not compare_kernel.fusable(a.view(2, 4), a.view(2, 4))
        assert not compare_kernel.fusable(a[::2], a[::2])


@pytest.fixture
def fused_on_this_device(monkeypatch):
    """The fused path for this device's tensors (on the CPU: through the interpreter), unchecked yet."""
    monkeypatch.setattr(verify, "_fusable", lambda a, b: b.dtype in compare_kernel.FUSED_DTYPES)
    monkeypatch.setitem(verify._FUSED, "ok", None)


def _details(c: verify.Comparison) -> list[tuple[str, bool, str]]:
    return [(k.name, k.passed, k.detail) for k in c.checks]


def test_compare_outputs_says_the_same_through_the_fused_path(fused_on_this_device, monkeypatch):
    """Every check and its detail (counts, worst element, first unwritten index) is the same either way,
    over chunks (a small chunk size forces several) with NaN poison, an Inf mismatch and a bad value."""
    out, ref = _pair(10_000, torch.float32, seed=4)
    out[1234:1300] = NAN
    ref[5000], out[5000] = INF, -INF
    out[7777] = ref[7777] + 1.0
    fused = verify.compare_outputs([out], [ref], chunk=3000)
    assert verify._FUSED["ok"] is True  # checked against PyTorch on first use, and agreed
    monkeypatch.setitem(verify._FUSED, "ok", False)
    plain = verify.compare_outputs([out], [ref], chunk=3000)
    assert _details(fused) == _details(plain)
    assert not fused.passed
    assert {k.name for k in fused.checks if not k.passed} == {"values", "written", "nan-inf"}


def test_a_fused_path_that_disagrees_is_dropped_for_the_process(fused_on_this_device, monkeypatch, capsys):
    """If the kernel ever disagrees with PyTorch on its first use (a compiler or driver problem), the
    process compares with PyTorch from then on, and says so: the verdicts never rest on it alone."""
    real = compare_kernel.chunk_summary
    says_all_fine = lambda a, b, atol, rtol: real(a, b, atol, rtol) * 0  # noqa: E731
    monkeypatch.setattr(compare_kernel, "chunk_summary", says_all_fine)
    out, ref = _pair(4000, torch.float32, seed=5)
    out[3] = ref[3] + 1.0
    first = verify.compare_outputs([out], [ref])
    assert verify._FUSED["ok"] is False
    assert "fused comparison disagreed" in capsys.readouterr().err
    assert not first.passed  # the PyTorch answer was used
    second = verify.compare_outputs([out], [ref])
    assert _details(second) == _details(first)


def test_once_agreed_the_fused_kernel_takes_the_whole_tensor_in_one_launch(fused_on_this_device, monkeypatch):
    """After its first-use check, finite outputs are compared in one launch over the whole tensor (no
    chunks, one read-back), with the same checks and details as the chunked PyTorch path; outputs with
    non-finite elements still go through the chunks for their details."""
    out, ref = _pair(10_000, torch.float32, seed=6)
    out[7777] = ref[7777] + 1.0
    out[10] = ref[10] - 0.5
    verify.compare_outputs([out], [ref], chunk=3000)  # the first use: chunked, cross-checked
    assert verify._FUSED["ok"] is True
    launches = []
    real = compare_kernel.chunk_summary
    monkeypatch.setattr(
        compare_kernel, "chunk_summary", lambda a, b, *t: launches.append(b.numel()) or real(a, b, *t)
    )
    whole = verify.compare_outputs([out], [ref], chunk=3000)
    assert launches == [10_000]
    monkeypatch.setitem(verify._FUSED, "ok", False)
    plain = verify.compare_outputs([out], [ref], chunk=3000)
    assert _details(whole) == _details(plain) and not whole.passed
    assert (whole.max_abs_err, whole.max_rel_err) == pytest.approx((plain.max_abs_err, plain.max_rel_err))
    monkeypatch.setitem(verify._FUSED, "ok", True)
    launches.clear()
    out[5] = NAN  # unwritten: the details need the chunks
    poisoned = verify.compare_outputs([out], [ref], chunk=3000)
    assert launches == [10_000, 3000, 3000, 3000, 1000]
    assert "written" in {k.name for k in poisoned.checks if not k.passed}
