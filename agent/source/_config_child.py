"""Run in a child process by agent/source/config_builders.py (`python -I` on this file, the request as JSON
on stdin): executes a kernel source's module-level helper functions and constants with a stand-in `triton`
(Config, cdiv, next_power_of_2, the driver answering with the target GPU) and a few safe builtins, then
evaluates one autotune `configs=` expression and prints the configs as JSON. Imports nothing of the
project, so it starts in milliseconds; the parent has already refused code that reaches dunder attributes."""

import contextlib
import json
import resource
import sys
from types import SimpleNamespace

SAFE_BUILTINS = [
    "abs",
    "all",
    "any",
    "bool",
    "dict",
    "enumerate",
    "filter",
    "float",
    "int",
    "isinstance",
    "len",
    "list",
    "map",
    "max",
    "min",
    "pow",
    "range",
    "reversed",
    "round",
    "set",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "print",
    "ValueError",
    "RuntimeError",
    "True",
    "False",
    "None",
]


class Config:
    def __init__(self, kwargs=None, num_warps=4, num_stages=3, num_ctas=1, maxnreg=None, pre_hook=None, **kw):
        if "kwargs" in kw:
            kwargs = kw.pop("kwargs")
        if kw:
            raise TypeError(f"unexpected Config arguments: {sorted(kw)}")
        if pre_hook is not None:
            raise TypeError("a config with a pre_hook cannot be written out as a literal")
        self.data = {
            "kwargs": dict(kwargs or {}),
            "num_warps": num_warps,
            "num_stages": num_stages,
            "num_ctas": num_ctas,
            "maxnreg": maxnreg,
        }


def _namespace(gpu):
    target = SimpleNamespace(backend="cuda", arch=gpu["arch"], warp_size=gpu["warpSize"])
    active = SimpleNamespace(
        get_current_target=lambda: target,
        get_current_device=lambda: 0,
        get_active_torch_device=lambda: "cuda",
        utils=SimpleNamespace(get_device_properties=lambda *a: dict(gpu)),
    )
    triton = SimpleNamespace(
        Config=Config,
        cdiv=lambda a, b: -(-a // b),
        next_power_of_2=lambda n: 1 << max(int(n) - 1, 0).bit_length(),
        runtime=SimpleNamespace(driver=SimpleNamespace(active=active)),
        language=SimpleNamespace(constexpr=lambda x: x),
    )
    cuda = SimpleNamespace(
        is_available=lambda: True, get_device_capability=lambda *a: divmod(gpu["arch"], 10)
    )
    torch = SimpleNamespace(cuda=cuda, version=SimpleNamespace(hip=None, cuda="12.8"))
    b = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
    return {
        "__builtins__": {k: b[k] for k in SAFE_BUILTINS if k in b},
        "triton": triton,
        "Config": Config,
        "tl": triton.language,
        "torch": torch,
    }


def main():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    request = json.load(sys.stdin)
    ns = _namespace(request["gpu"])
    for statement in request["statements"]:
        # a statement that fails is one the configs do not need (a device query of another kind, say)
        with contextlib.suppress(Exception):
            exec(statement, ns)
    try:
        configs = list(eval(request["expr"], ns))
        if not all(isinstance(c, Config) for c in configs):
            raise TypeError("the configs are not all triton.Config")
        out = [c.data for c in configs]
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return
    print(json.dumps({"configs": out}))


main()
