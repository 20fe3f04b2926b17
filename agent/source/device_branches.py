"""Branches on the device or on Triton's interpreter whose arms do different work.

The CPU check runs one arm only (`x.is_cuda` is False there, `TRITON_INTERPRET` is set), so a candidate
whose other arm does other work cannot be judged on the CPU: the verdict is "the CPU cannot decide"
(`Status.UNDECIDED`, exit 3), and the GPU check decides. Arms that differ only in values (a block size
per device, a device name) or in device queries and synchronisation do the same work and are no finding.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

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


def _work(stmts: list[ast.stmt], exempt: set[int]) -> set[str]:
    """Calls that do work, and returned values that are not constants (a device's name), in a branch arm."""
    found: set[str] = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and id(node) not in exempt:
                name = ast.unparse(node.func)
                if not name.startswith(_NOT_WORK) and not name.endswith((".synchronize", ".is_available")):
                    found.add(name)
            elif (
                isinstance(node, ast.Return)
                and node.value is not None
                and not isinstance(node.value, ast.Constant)
            ):
                found.add(f"return {ast.unparse(node.value)}")
    return found


def _other_device(test: ast.expr) -> bool:
    """`x.device.type == "xpu"` (or another device that is neither the CPU nor the CUDA target): the same
    arm runs on the CPU check and on the GPU, so the branch tells nothing the CPU cannot see."""
    return (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq | ast.NotEq)
        and any(
            isinstance(side, ast.Constant)
            and isinstance(side.value, str)
            and side.value not in ("cuda", "cpu")
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
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.If) or node in kernels:
            continue
        test = ast.unparse(node.test)
        if not any(word in test for word in _DEVICE_WORDS) or _other_device(node.test):
            continue
        exempt = _elif_tests(node)
        differs = _work(node.body, exempt) ^ _work(_reachable_else(node), exempt)
        if differs:
            out.append(DeviceBranch(line=node.lineno, test=test, only_one=sorted(differs)[0]))
    return out
