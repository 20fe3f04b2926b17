"""Branches on the device or on Triton's interpreter whose arms do different work.

The CPU check runs one arm only (`x.is_cuda` is False there, `TRITON_INTERPRET` is set), so a candidate
whose other arm does other work cannot be judged on the CPU: the verdict is "the CPU cannot decide"
(`Status.UNDECIDED`, exit 3), and the GPU check decides. Arms that differ only in values (a block size
per device, a device name) or in device queries and synchronisation do the same work and are no finding.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Device types that are neither the CPU nor the CUDA target: an arm for one of them is taken by neither check.
_OTHER_DEVICES = frozenset({"xpu", "npu", "mps", "hpu", "xla", "mtia", "musa", "mlu", "ipu", "meta"})
# What a test reads to be a branch on the device or the interpreter.
_DEVICE_WORDS = ("is_cuda", "is_cpu", "device.type", "cuda.is_available", "TRITON_INTERPRET", "interpret")
# Calls that are not work: device queries, synchronisation, metadata, errors, messages.
_NOT_WORK = (
    "torch.cuda.",
    "torch.xpu.",
    "torch.device",
    "torch.Size",
    "getattr",
    "hasattr",
    "isinstance",
    "len",
    "int",
    "float",
    "str",
    "print",
    "warnings.warn",
    "os.environ.get",
    "os.getenv",
    "triton.cdiv",
    "triton.next_power_of_2",
    "min",
    "max",
    # A launch configuration per device is a value, like a block size: it chooses how, not what, to compute.
    "triton.Config",
)


@dataclass(frozen=True)
class DeviceBranch:
    line: int
    test: str
    only_one: str  # work one arm does and the other does not

    def text(self) -> str:
        return f"line {self.line}: `if {self.test}` runs `{self.only_one}` in one arm only"


def _kernel_nodes(tree: ast.AST) -> set[ast.AST]:
    out: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in node.decorator_list):
            out |= set(ast.walk(node))
    return out


def _elif_tests(node: ast.If) -> set[int]:
    """The nodes of the conditions of `node`'s elif chain: they only choose the next arm (Liger's
    `elif is_npu_available():`); a call in any other condition inside an arm is the arm's work."""
    out: set[int] = set()
    while len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
        node = node.orelse[0]
        out |= {id(sub) for sub in ast.walk(node.test)}
    return out


def _is_value(expr: ast.expr) -> bool:
    """A constant, a launch configuration, or a collection of them: what an arm returns without computing."""
    if isinstance(expr, ast.Constant):
        return True
    if isinstance(expr, ast.Call):
        return ast.unparse(expr.func) == "triton.Config"
    if isinstance(expr, ast.List | ast.Tuple | ast.Set):
        return all(_is_value(e) for e in expr.elts)
    if isinstance(expr, ast.ListComp | ast.GeneratorExp):
        return _is_value(expr.elt)
    return False


class _Work:
    """Calls that do work, and returned values that are not values (a device's name, configurations), in a
    branch arm. A call to a function of the same module counts as the work of its body (the Triton
    tutorial's `return get_cuda_autotune_config()` returns configurations, not a result)."""

    def __init__(self, local: dict[str, ast.FunctionDef | ast.AsyncFunctionDef], exempt: set[int]):
        self.exempt = exempt
        self.local = local  # the module's functions by name
        self.seen: set[str] = set()

    def of(self, stmts: list[ast.stmt]) -> set[str]:
        found: set[str] = set()
        for stmt in stmts:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call) and id(node) not in self.exempt:
                    found |= self._call(node)
                elif isinstance(node, ast.Return) and not self._returns_value(node):
                    found.add(f"return {ast.unparse(node.value)}")
        return found

    @staticmethod
    def _returns_value(node: ast.Return) -> bool:
        # a bare return returns nothing; a returned call is judged as a call (above); the rest must be values
        value = node.value
        return value is None or isinstance(value, ast.Call) or _is_value(value)

    def _call(self, node: ast.Call) -> set[str]:
        name = ast.unparse(node.func)
        if name.startswith(_NOT_WORK) or name.endswith((".synchronize", ".is_available")):
            return set()
        local = self.local.get(name)
        if local is None or name in self.seen:
            return {name}
        self.seen.add(name)
        try:
            inner = self.of(local.body)
        finally:
            self.seen.discard(name)
        return {name} if inner else set()


def _other_device(test: ast.expr) -> bool:
    """`x.device.type == "xpu"` (or another device that is neither the CPU nor the CUDA target): the same
    arm runs on the CPU check and on the GPU, so the branch tells nothing the CPU cannot see."""
    return (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq | ast.NotEq)
        and any(
            isinstance(side, ast.Constant) and side.value in _OTHER_DEVICES
            for side in (test.left, *test.comparators)
        )
    )


def _reachable_else(node: ast.If) -> list[ast.stmt]:
    """`node`'s else part without the elif arms for another device (`elif x.device.type == "npu":`): neither
    the CPU check nor the CUDA target takes them, so what they do cannot differ between the two."""
    orelse = node.orelse
    while len(orelse) == 1 and isinstance(orelse[0], ast.If) and _other_device(orelse[0].test):
        orelse = orelse[0].orelse
    if len(orelse) == 1 and isinstance(orelse[0], ast.If):
        inner = orelse[0]
        return [ast.If(test=inner.test, body=inner.body, orelse=_reachable_else(inner))]
    return orelse


def device_branches(source: str) -> list[DeviceBranch]:
    """Every `if` on the device or the interpreter (outside Triton kernels) whose arms do different work."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    kernels = _kernel_nodes(tree)
    functions = ast.FunctionDef | ast.AsyncFunctionDef
    local = {node.name: node for node in ast.walk(tree) if isinstance(node, functions)}  # once per source
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.If) or node in kernels:
            continue
        test = ast.unparse(node.test)
        if not any(word in test for word in _DEVICE_WORDS) or _other_device(node.test):
            continue
        work = _Work(local, _elif_tests(node))
        differs = work.of(node.body) ^ work.of(_reachable_else(node))
        if differs:
            out.append(DeviceBranch(line=node.lineno, test=test, only_one=sorted(differs)[0]))
    return out
