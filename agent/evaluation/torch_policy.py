"""The torch-op policy: which PyTorch ops a candidate may keep outside its Triton kernels.

The default is the strict contract (`agent.evaluation.accounting.STRICT_ALLOWED`: allocation, views, fills,
same-dtype copies). `--allow-torch conv2d,linear` (run, check, batch) or `allow_torch = [...]` in a
problem's `problem.toml` adds the ops named here, by the names users know. Each name is defined once, with
- `aten`: the ATen ops it reaches at the dispatch level on top of the strict set (what the run-time guard,
  a TorchDispatchMode, sees; `tests/test_torch_policy.py` derives them, so the table cannot drift), and
- `python`: the callables of a candidate's source that reach them (what the static checks,
  `agent.source.anticheat`, resolve a call to; `torch.Tensor.x` is the method `.x()`, `@` is `torch.matmul`).

The guard works at the ATen level, so names that share an ATen op share it at run time: every
convolution (1d/2d/3d, transposed) is `aten.convolution`; the static checks still tell them apart.
Allowed ops never stand in for the candidate's kernels: every output must still come from a launch of the
candidate's own Triton kernels on every call (`launch-covers-output`, docs/anticheat.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel


class TorchOp(BaseModel):
    """One name of the policy."""

    aten: frozenset[str]
    python: frozenset[str]
    doc: str


def _op(aten: str, python: str, doc: str) -> TorchOp:
    return TorchOp(aten=frozenset(aten.split()), python=frozenset(python.split()), doc=doc)


def _conv(name: str, layer: str, doc: str) -> TorchOp:
    return _op("convolution", f"torch.nn.functional.{name} torch.{name} torch.nn.{layer}", doc)


TORCH_OPS: dict[str, TorchOp] = {
    "conv1d": _conv("conv1d", "Conv1d", "1-d convolution (cuDNN on the GPU)"),
    "conv2d": _conv("conv2d", "Conv2d", "2-d convolution (cuDNN on the GPU)"),
    "conv3d": _conv("conv3d", "Conv3d", "3-d convolution (cuDNN on the GPU)"),
    "conv_transpose1d": _conv("conv_transpose1d", "ConvTranspose1d", "1-d transposed convolution"),
    "conv_transpose2d": _conv("conv_transpose2d", "ConvTranspose2d", "2-d transposed convolution"),
    "conv_transpose3d": _conv("conv_transpose3d", "ConvTranspose3d", "3-d transposed convolution"),
    "linear": _op(
        "addmm mm", "torch.nn.functional.linear torch.nn.Linear", "x @ W.T + b (cuBLAS on the GPU)"
    ),
    "matmul": _op(
        "mm bmm dot mv",
        "torch.matmul torch.Tensor.matmul torch.Tensor.__matmul__",
        "torch.matmul and the @ operator, any rank",
    ),
    "mm": _op("mm", "torch.mm torch.Tensor.mm", "2-d matrix product"),
    "bmm": _op("bmm", "torch.bmm torch.Tensor.bmm", "batched matrix product"),
    "addmm": _op("addmm", "torch.addmm torch.Tensor.addmm", "bias + 2-d matrix product"),
    "baddbmm": _op("baddbmm", "torch.baddbmm torch.Tensor.baddbmm", "bias + batched matrix product"),
    "embedding": _op(
        "embedding", "torch.nn.functional.embedding torch.embedding torch.nn.Embedding", "table lookup"
    ),
    "layer_norm": _op(
        "native_layer_norm",
        "torch.nn.functional.layer_norm torch.layer_norm torch.nn.LayerNorm",
        "layer normalization over the last dimensions",
    ),
}


class PolicyError(ValueError):
    """An unknown name in a torch-op policy."""


def parse_names(names: Iterable[str] | str | None) -> list[str]:
    """The policy's names, checked and sorted, from a list or a comma-separated string (empty: strict)."""
    if names is None:
        return []
    items = names.split(",") if isinstance(names, str) else list(names)
    out = sorted({str(n).strip().lower() for n in items if str(n).strip()})
    unknown = [n for n in out if n not in TORCH_OPS]
    if unknown:
        raise PolicyError(
            f"unknown torch op{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for --allow-torch / "
            f"allow_torch; known: {', '.join(TORCH_OPS)}"
        )
    return out


def merged(*policies: Iterable[str]) -> list[str]:
    """The union of several policies (the problem's and the command line's), checked."""
    return parse_names([n for p in policies for n in p])


def allowed_aten_ops(names: Iterable[str]) -> frozenset[str]:
    """The ATen ops the names allow, on top of the strict contract (not including it)."""
    return frozenset().union(*(TORCH_OPS[n].aten for n in parse_names(names)))


def guard_ops(names: Iterable[str]) -> frozenset[str]:
    """The run-time guard's whole allowed set: the strict contract plus the names' ATen ops."""
    from agent.evaluation.accounting import STRICT_ALLOWED

    return STRICT_ALLOWED | allowed_aten_ops(names)


def allowed_python(names: Iterable[str]) -> frozenset[str]:
    """The callables (canonical dotted names) the static checks let a forward path call."""
    return frozenset().union(*(TORCH_OPS[n].python for n in parse_names(names)))


def describe(names: Iterable[str]) -> str:
    """`strict` or the names, for records and summaries."""
    names = list(names)
    return ",".join(names) if names else "strict"
