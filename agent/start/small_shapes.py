"""Small shapes for the CPU, derived from a KernelBench file's own size constants.

KernelBench files set their sizes in module-level integers (`batch_size = 4096`, `dim = 393216`) that
`get_inputs` / `get_init_inputs` read. Triton's interpreter, and the CPU's memory, cannot take the real
sizes (a level-1 softmax's input is 6 GiB), so a problem without `[small_shapes]` gets them derived here:

- Everything is measured on the meta device: shapes and bytes, nothing allocated.
- Only integers that set a shape are scaled (doubling one on the meta device changes a shape); integers of
  8 or less (kernel sizes, strides, the axis to reduce) stay as they are.
- Constants of equal value scale together, so one constant or two that set a square matmul's sides keep
  them equal; two different values never meet (the smaller steps aside by one).
- The largest constant is halved until the largest tensor (input, output or parameter) holds at most
  `MAX_ELEMENTS` elements, and every step must keep each dimension's role: same ranks and dtypes, the same
  dimensions of size 1, and dimensions equal exactly where they were equal at the real size.
- The reference then runs once at the small size on the CPU, which proves it still works there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from agent.problem import ProblemError, build, build_model, default_device, flatten_outputs, load_reference
from agent.records import ProblemSpec

MAX_ELEMENTS = 1 << 14  # per tensor: the bundled problems' hand-picked small shapes are of this order
FLOOR = 8  # constants at or below it are not sizes to shrink (kernel sizes, strides, axes)


@dataclass(frozen=True)
class _Signature:
    """Shapes and dtypes of one call's inputs, outputs and parameters (meta device)."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @property
    def largest(self) -> int:
        out = 0
        for s in self.shapes:
            n = 1
            for d in s:
                n *= d
            out = max(out, n)
        return out

    def dims(self) -> list[int]:
        return [d for s in self.shapes for d in s]


def _signature(module: ModuleType, spec: ProblemSpec, values: dict[str, int]) -> _Signature | None:
    """The call's signature with `values` set, or None when the reference fails at them."""
    import torch

    for k, v in values.items():
        setattr(module, k, v)
    try:
        model, inputs = build(module, spec.reference_path, "meta", seed=0)
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        tensors += list(model.parameters()) + list(model.buffers())
        try:
            with torch.no_grad(), default_device("meta"):
                tensors += flatten_outputs(model(*inputs))
        except NotImplementedError:
            pass  # an op without a meta kernel: inputs and parameters still say the sizes
    except (ProblemError, Exception):
        return None
    return _Signature(tuple(tuple(t.shape) for t in tensors), tuple(str(t.dtype) for t in tensors))


def _same_roles(real: _Signature, small: _Signature) -> bool:
    if len(real.shapes) != len(small.shapes) or real.dtypes != small.dtypes:
        return False
    if [len(s) for s in real.shapes] != [len(s) for s in small.shapes]:
        return False
    a, b = real.dims(), small.dims()
    if any((x == 1) != (y == 1) for x, y in zip(a, b, strict=True)):
        return False
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(i + 1, len(a)))


def size_constants(module: ModuleType) -> dict[str, int]:
    """The module's integer globals above FLOOR: the candidates for scaling."""
    return {k: v for k, v in vars(module).items() if type(v) is int and not k.startswith("_") and v > FLOOR}


def _groups(values: dict[str, int], names: Iterable[str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for n in names:
        out.setdefault(values[n], []).append(n)
    return out


def derive_small_shapes(spec: ProblemSpec) -> dict[str, int]:
    """Small values for the module's size constants (see the module docstring); ProblemError if none do."""
    module = load_reference(spec, small=False)
    real_values = size_constants(module)
    real = _signature(module, spec, {})
    if real is None:
        raise ProblemError(spec.reference_path, "the reference fails on the meta device at its own sizes")
    if real.largest <= MAX_ELEMENTS:
        return {}
    scalable = [n for n, v in real_values.items() if _signature(module, spec, {n: v * 2}) != real]
    _signature(module, spec, real_values)  # restore
    groups = _groups(real_values, scalable)  # original value -> the constants that had it
    current = {v: v for v in groups}
    frozen: set[int] = set()
    sig = real
    while sig.largest > MAX_ELEMENTS:
        movable = [g for g in groups if g not in frozen and current[g] > FLOOR]
        if not movable:
            break
        g = max(movable, key=lambda k: current[k])
        new = max(FLOOR, current[g] // 2)
        taken = {current[o] for o in groups if o != g}
        while new in taken and new > 1:
            new -= 1
        trial = {**current, g: new}
        trial_sig = _signature(module, spec, _expand(groups, trial))
        if trial_sig is None or not _same_roles(real, trial_sig):
            frozen.add(g)
            continue
        current, sig = trial, trial_sig
    values = _expand(groups, current)
    if sig.largest > MAX_ELEMENTS * 64:
        raise ProblemError(
            spec.reference_path,
            f"no small shapes found for the CPU (largest tensor still {sig.largest:,} elements); "
            "set [small_shapes] in a problem.toml or pass --small-shapes",
        )
    _check_runs(spec, values)
    return {k: v for k, v in values.items() if v != real_values[k]}


def _expand(groups: dict[int, list[str]], current: dict[int, int]) -> dict[str, int]:
    return {n: current[g] for g, names in groups.items() for n in names}


def _check_runs(spec: ProblemSpec, values: dict[str, int]) -> None:
    """Run the reference once on the CPU at the small size: the shapes must work, not only look right."""
    import torch

    module = load_reference(spec, small=False)
    for k, v in values.items():
        setattr(module, k, v)
    what = ", ".join(f"{k}={v}" for k, v in values.items())
    model, _ = build_model(module, spec.reference_path, "cpu", seed=0)
    _, inputs = build(module, spec.reference_path, "cpu", seed=0)
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as e:
        raise ProblemError(
            spec.reference_path,
            f"the reference fails at the derived small shapes ({what}): {type(e).__name__}: {e}; "
            "set [small_shapes] in a problem.toml or pass --small-shapes",
        ) from None


def parse_shapes_flag(text: str) -> dict[str, int | float]:
    """`--small-shapes batch_size=8,dim=300` as a dict; ValueError says what is wrong."""
    out: dict[str, int | float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"--small-shapes: {part!r} is not NAME=VALUE")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            try:
                out[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--small-shapes: {value!r} is not a number") from None
    return out
