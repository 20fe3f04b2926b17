"""What Triton's CPU interpreter lacks and real kernels use, supplied in a worker before a candidate is
imported (`install`, called by agent/evaluation/triton_hooks.py when the interpreter runs).
Each shim does on the CPU what the GPU compiler does with the same code:

- libdevice math (`triton.language.extra.libdevice` and `...extra.cuda.libdevice`: `rsqrt`, `tanh`, `erf`,
  `exp2`, `pow`, `fast_expf`...): Triton's own dispatch (argument types, broadcasting, the result type) runs
  unchanged; only the final external call, which the interpreter refuses, is computed with the torch
  function of the same name (`_LIBDEVICE`). The generic `extra.libdevice` module holds stubs that the
  compiler replaces with the backend's functions; here they are replaced with the CUDA ones likewise.
- float scalar arguments become fp32 scalars, as a compiled kernel sees them, so `eps.to(tl.float32)` works.
- `triton.runtime.driver.active` answers device queries (`get_current_device`, `get_current_target`,
  `utils.get_device_properties` -> `multiprocessor_count`, `max_shared_mem`...) with the target GPU's
  datasheet entry (agent/data/gpus.toml; `agent.prompt.gpus.target_gpu`), so a kernel sized by
  the SM count runs on the CPU as it would there.

What still cannot run (inline assembly, a kernel's compiled handle, an unknown libdevice function) raises
or is reported as an interpreter limit: `interpreter_limit(e)` says so, and the verdict is that the CPU
cannot decide, not that the candidate crashed (agent/evaluation/verdicts.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agent.prompt.gpus import target_gpu


class InterpreterLimit(NotImplementedError):
    """Something a kernel uses that the CPU interpreter cannot run (the GPU can)."""


# --------------------------------------------------------------------------- libdevice


# libdevice functions computed by the torch function of the same name.
_SAME_NAME = (
    "abs",
    "floor",
    "ceil",
    "trunc",
    "exp",
    "exp2",
    "log",
    "log2",
    "log10",
    "log1p",
    "expm1",
    "sin",
    "cos",
    "tan",
    "sinh",
    "cosh",
    "tanh",
    "asin",
    "acos",
    "atan",
    "asinh",
    "acosh",
    "atanh",
    "sqrt",
    "rsqrt",
    "erf",
    "erfc",
    "erfinv",
    "lgamma",
    "round",
    "atan2",
    "fmod",
    "hypot",
    "copysign",
    "nextafter",
    "isnan",
    "isinf",
    "isfinite",
    "signbit",
    "pow",
)

# libdevice functions that torch has under another name: libdevice name -> attribute path under `torch`.
_RENAMED = {
    "fabs": "abs",
    "rint": "round",
    "nearbyint": "round",
    "llrint": "round",
    "llround": "round",
    "finite": "isfinite",
    "isfinited": "isfinite",
    "rcp": "reciprocal",
    "div": "div",
    "divide": "div",
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "fmin": "minimum",
    "fmax": "maximum",
    "remainder": "remainder",
    "normcdf": "special.ndtr",
    "normcdfinv": "special.ndtri",
    "erfcx": "special.erfcx",
    "j0": "special.bessel_j0",
    "j1": "special.bessel_j1",
    "y0": "special.bessel_y0",
    "y1": "special.bessel_y1",
    "cyl_bessel_i0": "special.i0",
    "cyl_bessel_i1": "special.i1",
}


def _torch_attribute(torch: Any, path: str) -> Callable[..., Any]:
    """`special.ndtr` -> `torch.special.ndtr`."""
    found = torch
    for part in path.split("."):
        found = getattr(found, part)
    return found


def _composed_functions(torch: Any) -> dict[str, Callable[..., Any]]:
    """The libdevice functions that torch has no single function for, composed of torch operations."""
    return {
        "exp10": lambda x: torch.pow(10.0, x),
        "cbrt": lambda x: torch.sign(x) * torch.abs(x).pow(1.0 / 3.0),
        "rcbrt": lambda x: 1.0 / (torch.sign(x) * torch.abs(x).pow(1.0 / 3.0)),
        "saturate": lambda x: torch.clamp(x, 0.0, 1.0),
        "fma": lambda a, b, c: a * b + c,
        "fdim": lambda a, b: torch.clamp(a - b, min=0),
        "rhypot": lambda a, b: 1.0 / torch.hypot(a, b),
        "erfcinv": lambda x: torch.erfinv(1.0 - x),
        "tgamma": lambda x: (
            torch.special.gamma(x) if hasattr(torch.special, "gamma") else torch.exp(torch.lgamma(x))
        ),
        "sinpi": lambda x: torch.sin(torch.pi * x),
        "cospi": lambda x: torch.cos(torch.pi * x),
    }


def _libdevice_table() -> dict[str, Callable[..., Any]]:
    """libdevice base name (no `__nv_`, `fast_`, float suffix or rounding mode) -> a torch computation."""
    import torch  # heavy: imported only where the interpreter runs

    table: dict[str, Callable[..., Any]] = {name: _torch_attribute(torch, name) for name in _SAME_NAME}
    table.update({name: _torch_attribute(torch, path) for name, path in _RENAMED.items()})
    table.update(_composed_functions(torch))
    return table


_ROUNDING = re.compile(r"_r[nzdu]$")


def libdevice_name(symbol: str) -> str:
    """`__nv_fast_expf` -> `exp`, `__nv_fmaf_rn` -> `fma`, `__nv_rsqrt` -> `rsqrt` (the table's keys)."""
    name = _ROUNDING.sub("", symbol.removeprefix("__nv_")).removeprefix("fast_")
    return name


def _lookup(symbol: str, table: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    name = libdevice_name(symbol)
    for key in (name, name[:-1] if name[-1:] in "fd" else name):
        if key in table:
            return table[key]
    raise InterpreterLimit(f"libdevice {symbol} has no CPU equivalent here; the GPU run decides")


def _extern_elementwise(
    self: Any, lib_name: str, lib_path: str, symbol: str, args: list, ret_type: Any, is_pure: bool
) -> Any:
    """InterpreterBuilder.create_extern_elementwise: the libdevice call, computed with torch on the CPU."""
    import numpy as np
    import torch
    from triton.runtime.interpreter import TensorHandle, _get_np_dtype

    fn = _lookup(symbol, _TABLE)
    # The GPU computes this inside the kernel: neither torch function modes nor the work meter's dispatch
    # mode (agent.evaluation.accounting) may count it as torch work of the candidate's, whose kernel line
    # is the nearest untrusted frame on the stack here.
    from torch.utils._python_dispatch import _disable_current_modes

    with torch._C.DisableTorchFunction(), _disable_current_modes():
        out = fn(*(torch.from_numpy(np.asarray(a.data)) for a in args))
        data = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    return TensorHandle(data.astype(_get_np_dtype(ret_type)), ret_type.scalar)


_TABLE: dict[str, Callable[..., Any]] = {}


def _install_libdevice() -> None:
    import triton.language.extra.cuda.libdevice as cuda_libdevice
    import triton.language.extra.libdevice as generic
    from triton.language import core
    from triton.runtime import interpreter

    _TABLE.update(_libdevice_table())
    interpreter.InterpreterBuilder.create_extern_elementwise = _extern_elementwise
    semantic = interpreter.interpreter_semantic
    for name, member in list(vars(cuda_libdevice).items()):
        if not core.is_builtin(member):
            continue

        def call(*args: Any, _member: Any = member, **kwargs: Any) -> Any:
            kwargs.pop("_semantic", None)
            return _member(*args, _semantic=semantic, **kwargs)

        call.__name__ = name
        setattr(cuda_libdevice, name, call)
        if hasattr(generic, name):  # the compiler maps the generic stubs to the backend's functions too
            setattr(generic, name, call)


# --------------------------------------------------------------------------- float scalar arguments


def _install_float_scalars() -> None:
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter._implicit_cvt

    def convert(arg: Any) -> Any:
        if type(arg) is float:  # a compiled kernel receives an fp32 scalar, with .to() and the rest
            return tl.tensor(
                interpreter.TensorHandle(np.array([arg], dtype=np.float32), tl.float32), tl.float32
            )
        return original(arg)

    interpreter._implicit_cvt = convert


# --------------------------------------------------------------------------- the driver


class _Utils:
    def __init__(self, props: dict[str, int]):
        self.props = props

    def get_device_properties(self, device: Any = 0) -> dict[str, int]:
        return dict(self.props)


class TargetDriver:
    """`triton.runtime.driver.active` on the CPU: the target GPU's datasheet answers device queries; the
    tensors stay on the CPU."""

    def __init__(self, spec: Any):
        major, minor = (int(x) for x in (spec.compute_capability or "9.0").split("."))
        self.capability = (major, minor)
        warp = spec.warp_size or 32
        self.utils = _Utils(
            {
                "multiprocessor_count": spec.sms or 132,
                "max_shared_mem": int((spec.max_smem_per_block_kb or 227) * 1024),
                "max_num_regs": 65536,
                "warpSize": warp,
                "sm_clock_rate": 0,
                "mem_clock_rate": 0,
                "mem_bus_width": 0,
            }
        )

    def is_active(self) -> bool:
        return True

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_device_capability(self, device: int = 0) -> tuple[int, int]:
        return self.capability

    def get_current_target(self) -> Any:
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.capability[0] * 10 + self.capability[1], self.utils.props["warpSize"])

    def get_active_torch_device(self) -> Any:
        import torch

        return torch.device("cpu")

    def get_device_interface(self) -> Any:
        import torch

        return torch.cpu

    def get_benchmarker(self) -> Any:
        raise InterpreterLimit("benchmarking needs a GPU")

    def get_empty_cache_for_benchmark(self) -> Any:
        raise InterpreterLimit("benchmarking needs a GPU")


def _install_driver() -> None:
    from triton.runtime import driver

    driver.set_active(TargetDriver(target_gpu()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- install and limits


def install() -> None:
    """Install every shim (once per process); only under the interpreter."""
    if getattr(install, "done", False):
        return
    _install_libdevice()
    _install_float_scalars()
    _install_driver()
    install.done = True  # type: ignore[attr-defined]


_LIMIT_TEXT = (
    "not supported in interpreter mode",
    "has no CPU equivalent here",
    "needs a GPU",
    "'InterpretedFunction' object has no attribute",
    "active drivers",
)


def interpreter_limit(e: BaseException) -> str | None:
    """What the CPU interpreter could not run, when that is why `e` was raised (else None)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur)
        if isinstance(cur, InterpreterLimit) or any(t in text for t in _LIMIT_TEXT):
            return f"{type(cur).__name__}: {text}"
        cur = cur.__cause__ or cur.__context__
    return None
