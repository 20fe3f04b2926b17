"""Problems: KernelBench-style reference modules, alone or in a problem folder.

A problem folder (see kernels/README.md) holds `problem.toml`, `reference.py` (KernelBench's `Model`,
`get_inputs`, `get_init_inputs`) and `kernel.py` (a starting `ModelNew` with Triton kernels). A bare
KernelBench file is a problem too, with no starting kernel and no small shapes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
import tomllib
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from agent.data.paths import kernels_dir
from agent.evaluation.torch_policy import PolicyError, parse_names
from agent.records import ProblemShapes, ProblemSpec, TensorInfo


class ProblemError(Exception):
    """A problem that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path | str, message: str):
        self.path = Path(path)
        self.message = message
        super().__init__(f"{path}: {message}")


def resolve_problem_path(path: Path | str) -> Path:
    """A path as given, or the name of a bundled problem (`l1_norm`, `kernels/l1_norm`)."""
    p = Path(path)
    if p.exists():
        return p.resolve()
    bare = len(p.parts) == 1 or (len(p.parts) == 2 and p.parts[0] == "kernels")
    bundled = kernels_dir() / p.name
    if bare and bundled.exists():
        return bundled.resolve()
    raise ProblemError(p, "no such file or folder (and no bundled problem of that name)")


def load_problem(path: Path | str, small_shapes: dict[str, int | float] | None = None) -> ProblemSpec:
    """Read a problem folder or a bare KernelBench file, and check that it is well formed.

    The CPU's shapes: `small_shapes` when given (a flag), else the folder's `[small_shapes]`, else derived
    from the module's size constants (agent.start.small_shapes); `spec.shapes_origin` says which.
    """
    p = resolve_problem_path(path)
    if p.is_dir():
        spec = _load_folder(p)
    elif p.suffix == ".py":
        spec = ProblemSpec(name=p.stem, reference_path=p)
    else:
        raise ProblemError(p, "a problem is a folder with problem.toml or a KernelBench .py file")
    inspect_problem(spec, small=False)  # the file's own sizes, on the meta device: its faults named first
    if small_shapes:
        spec.small_shapes, spec.shapes_origin = dict(small_shapes), "flag"
    elif not spec.small_shapes:
        from agent.start.small_shapes import derive_small_shapes  # deferred: it imports this module

        spec.small_shapes, spec.shapes_origin = derive_small_shapes(spec), "derived"
    if spec.small_shapes:
        inspect_problem(spec, small=True)
    return spec


def _load_folder(folder: Path) -> ProblemSpec:
    toml_path = folder / "problem.toml"
    data: dict[str, Any] = {}
    if toml_path.exists():
        try:
            data = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ProblemError(toml_path, f"not valid TOML: {e}") from None
    reference = folder / data.pop("reference", "reference.py")
    if not reference.exists():
        raise ProblemError(folder, f"no reference module ({reference.name}) in the problem folder")
    explicit_kernel = "kernel" in data
    kernel: Path | None = folder / data.pop("kernel", "kernel.py")
    if not kernel.exists():
        if explicit_kernel:
            raise ProblemError(toml_path, f"kernel = {kernel.name!r} does not exist")
        kernel = None
    tol = data.pop("tolerance", {})
    if not isinstance(tol, dict) or set(tol) - {"atol", "rtol"}:
        extra = sorted(set(tol) - {"atol", "rtol"}) if isinstance(tol, dict) else tol
        raise ProblemError(toml_path, f"[tolerance] takes only `atol` and `rtol` (got {extra!r})")
    fields = {
        "name": data.pop("name", folder.name),
        "description": data.pop("description", ""),
        "small_shapes": data.pop("small_shapes", {}),
        "flops": data.pop("flops", None),
        "atol": tol.get("atol"),
        "rtol": tol.get("rtol"),
        "allow_torch": _allow_torch(toml_path, data.pop("allow_torch", [])),
    }
    if data:
        raise ProblemError(toml_path, f"unknown keys {sorted(data)}")
    try:
        return ProblemSpec(reference_path=reference, kernel_path=kernel, **fields)
    except ValidationError as e:
        raise ProblemError(toml_path, f"invalid fields: {e}") from None


def _allow_torch(toml_path: Path, names: object) -> list[str]:
    """`allow_torch = ["conv2d", ...]`: the problem's torch-op policy (agent.evaluation.torch_policy)."""
    if not isinstance(names, list):
        raise ProblemError(toml_path, f"allow_torch is a list of op names (got {names!r})")
    try:
        return parse_names(names)
    except PolicyError as e:
        raise ProblemError(toml_path, str(e)) from None


def describe_shapes(spec: ProblemSpec, small: bool) -> str:
    """One line saying which sizes an evaluation uses, for the terminal and the run's record."""
    if not small or not spec.small_shapes:
        return "the file's own sizes"
    where = {"derived": "derived from the file's sizes", "flag": "--small-shapes"}.get(
        spec.shapes_origin, spec.shapes_origin
    )
    return f"small shapes {', '.join(f'{k}={v}' for k, v in spec.small_shapes.items())} ({where})"


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def import_file(path: Path, module_name: str | None = None) -> ModuleType:
    """Import a Python file as a fresh module; errors name the file and the line."""
    name = module_name or f"_ncu_agent_mod_{path.stem}_{source_hash(str(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProblemError(path, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # never leave __pycache__ in a user's problem folder
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise ProblemError(path, f"syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise ProblemError(path, f"importing it raised {type(e).__name__}: {e}") from None
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def load_reference(spec: ProblemSpec, small: bool) -> ModuleType:
    """Import the reference module, with the small shapes applied when asked."""
    module = import_file(spec.reference_path)
    for attr in ("Model", "get_inputs", "get_init_inputs"):
        if not hasattr(module, attr):
            sys.modules.pop(module.__name__, None)
            raise ProblemError(spec.reference_path, f"defines no `{attr}` (KernelBench convention)")
    if small:
        for key, value in spec.small_shapes.items():
            if not hasattr(module, key):
                raise ProblemError(spec.reference_path, f"small_shapes sets `{key}`, which the module lacks")
            setattr(module, key, value)
    return module


@contextlib.contextmanager
def default_device(device: str) -> Iterator[None]:
    """Make factory functions in get_inputs() allocate on `device` (on the GPU: ms instead of s)."""
    import torch

    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


def _call(path: Path, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (line {tb[-1].lineno})" if tb else ""
        raise ProblemError(path, f"{what} raised {type(e).__name__}: {e}{where}") from None


def check_inputs(path: Path, inputs: Any) -> list[Any]:
    import torch

    if not isinstance(inputs, list | tuple):
        raise ProblemError(path, f"get_inputs() returned {type(inputs).__name__}, expected a list of tensors")
    bad = [type(x).__name__ for x in inputs if not isinstance(x, torch.Tensor | int | float | bool)]
    if bad:
        raise ProblemError(path, f"get_inputs() returned non-tensors: {', '.join(bad)}")
    if not any(isinstance(x, torch.Tensor) for x in inputs):
        raise ProblemError(path, "get_inputs() returned no tensor")
    return list(inputs)


def build_model(module: ModuleType, path: Path, device: str, seed: int) -> tuple[Any, list[Any]]:
    """The reference Model, seeded, on `device`, and the init inputs it was built with."""
    import torch

    torch.manual_seed(seed)
    with default_device(device):
        init_inputs = _call(path, "get_init_inputs()", module.get_init_inputs)
        if not isinstance(init_inputs, list | tuple):
            raise ProblemError(path, "get_init_inputs() must return a list")
        model = _call(path, "Model(*get_init_inputs())", module.Model, *init_inputs)
        if not isinstance(model, torch.nn.Module):
            raise ProblemError(path, "Model is not a torch.nn.Module")
    return model.to(device), list(init_inputs)


def build(module: ModuleType, path: Path, device: str, seed: int) -> tuple[Any, list[Any]]:
    """Construct the reference Model and draw inputs, both seeded, both on `device`."""
    import torch

    model, _ = build_model(module, path, device, seed)
    with default_device(device):
        torch.manual_seed(seed)
        inputs = check_inputs(path, _call(path, "get_inputs()", module.get_inputs))
    inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    return model.to(device), inputs


def tensor_info(t: Any) -> TensorInfo:
    return TensorInfo(
        shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."), nbytes=t.nelement() * t.element_size()
    )


def flatten_outputs(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for o in out for t in flatten_outputs(o)]
    return []


def inspect_problem(spec: ProblemSpec, small: bool) -> ProblemShapes:
    """Shapes, dtypes and byte counts of one call, on the meta device: validates the problem for free."""
    import torch

    module = load_reference(spec, small)
    path = spec.reference_path
    model, inputs = build(module, path, "meta", seed=0)
    with torch.no_grad():
        try:
            with default_device("meta"):
                out = model(*inputs)
            outputs = [tensor_info(t) for t in flatten_outputs(out)]
        except NotImplementedError:
            outputs = []  # an op with no meta kernel; the worker learns the outputs on the real device
        except Exception as e:
            raise ProblemError(path, f"Model.forward raised {type(e).__name__}: {e}") from None
    flops = None
    if spec.flops:
        try:
            flops = float(eval(spec.flops, {}, dict(vars(module))))
        except Exception as e:
            raise ProblemError(path, f"flops expression {spec.flops!r} failed: {e}") from None
    return ProblemShapes(
        inputs=[tensor_info(t) for t in inputs if isinstance(t, torch.Tensor)], outputs=outputs, flops=flops
    )
