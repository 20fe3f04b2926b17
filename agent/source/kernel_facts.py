"""What a kernel source says about its kernels, read from its AST: which `@jit` functions it launches,
each kernel's *runs* (for an autotuned kernel, each `triton.Config` (those code builds evaluated by
agent/source/config_builders.py) merged with the keywords of each
launch site; for a plain kernel, each launch site), the keyword values of each run (as text, resolved
through the local assignments that reach the launch, and where readable as the set of ints they may
take), the grids, and the model class. The stage rules (agent/source/stage_rules.py) compare these between a
candidate and its parent; the tiling search (agent/source/tiling_space.py) edits what they point at."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from agent.source.config_builders import BuilderError, concrete_configs, literal_calls
from agent.source.variants import (
    DEFAULT_NUM_STAGES,
    DEFAULT_NUM_WARPS,
    VariantError,
    autotune_configs,
    find_kernels,
    launch_sites,
)

UNREADABLE = (
    "the autotune configs of {kernel} are neither a literal list of triton.Config(...) nor code that "
    "builds one here; write them out"
)


@dataclass(frozen=True)
class Value:
    text: str
    ints: frozenset[int] | None  # None: not a number this check can read


@dataclass(frozen=True)
class Run:
    """One way a kernel is started: an autotune config (with its launch's keywords) or a launch site."""

    where: str  # "config 2 of k", "the launch of k at line 40"
    values: dict[str, Value]  # every keyword, num_warps and num_stages always present
    explicit: frozenset[str]  # keywords written in the code (not Triton's defaults)

    @property
    def blocks(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v.text) for k, v in self.values.items() if k.upper().startswith("BLOCK")))

    def choices(self, name: str) -> frozenset[int | str]:
        v = self.values[name]
        return v.ints if v.ints is not None else frozenset({v.text})

    def combos(self) -> set[tuple[Any, ...]]:
        """Every (BLOCK sizes, num_warps, num_stages) this run may start the kernel with."""
        return {(self.blocks, w, s) for w in self.choices("num_warps") for s in self.choices("num_stages")}


@dataclass
class Facts:
    tree: ast.Module
    kernels: dict[str, ast.FunctionDef]
    launched: list[str]  # kernels with a launch site, in definition order
    runs: dict[str, list[Run] | str]  # per launched kernel; a str says why its configs cannot be read
    grids: dict[str, set[str]]
    model: ast.ClassDef | None  # ModelNew, else Model (a bare reference is the parent of `first`)
    model_name: str


def assigned(scope: ast.AST, name: str) -> list[ast.AST]:
    """What a statement (or a module's top level) assigns to `name`: values, and `def name` statements.
    Does not look inside nested functions and classes: their names are theirs."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(scope.body) if isinstance(scope, ast.Module) else [scope]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if n.name == name:
                out.append(n)
            continue
        if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None:
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                out.append(n.value)
        todo.extend(c for c in ast.iter_child_nodes(n) if isinstance(c, ast.stmt))
    return out


def function_params(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    a = fn.args
    return {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}


def in_body(node: ast.AST, fn: ast.AST) -> bool:
    if isinstance(fn, ast.Lambda):
        return node is fn.body
    return isinstance(fn, ast.FunctionDef) and any(st is node for st in fn.body)


class Resolver:
    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.parent = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}

    def definitions(self, name: ast.Name) -> list[ast.AST]:
        """The assignments to `name` that may reach its use (a cheap reaching-definitions pass).

        Walks back through the statements before the use, block by block outwards: a plain assignment
        ends the search, one inside an if/for/with adds a possibility and the search goes on. A function
        parameter has none; a name the function never assigns is looked up at module level.
        """
        found: list[ast.AST] = []
        node: ast.AST = name
        while (up := self.parent.get(id(node))) is not None:
            for field in ("body", "orelse", "finalbody"):
                block = getattr(up, field, None)
                if not isinstance(block, list):
                    continue
                at = next((i for i, st in enumerate(block) if st is node), None)
                for st in reversed(block[:at] if at is not None else []):
                    defs = assigned(st, name.id)
                    found += defs
                    if defs and isinstance(st, ast.Assign | ast.AnnAssign | ast.FunctionDef):
                        return found  # a plain (re)definition: nothing earlier reaches the use
            if in_body(node, up):  # the function's boundary (a decorator or default is evaluated outside)
                local = found or name.id in function_params(up)  # type: ignore[arg-type]
                return found if local else assigned(self.tree, name.id)
            node = up
        return found

    def value(self, expr: ast.expr) -> Value:
        text = ast.unparse(expr)
        if isinstance(expr, ast.Name):  # a local name stands for what was assigned to it
            defs = self.definitions(expr)
            if defs:
                text = " | ".join(sorted({ast.unparse(d) for d in defs}))
        return Value(text, self.ints(expr, 0))

    def ints(self, expr: ast.AST, depth: int) -> frozenset[int] | None:
        if depth > 4:
            return None
        if isinstance(expr, ast.Constant) and type(expr.value) is int:
            return frozenset({expr.value})
        if isinstance(expr, ast.IfExp):
            a, b = self.ints(expr.body, depth + 1), self.ints(expr.orelse, depth + 1)
            return a | b if a is not None and b is not None else None
        if isinstance(expr, ast.Name):
            sets = [self.ints(d, depth + 1) for d in self.definitions(expr)]
            if sets and all(s is not None for s in sets):
                return frozenset().union(*sets)  # type: ignore[arg-type]
        return None


def config_meta(call: ast.Call) -> ast.Dict | None:
    """The dict of meta-parameters a triton.Config(...) is given as a literal, else None."""
    meta = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "kwargs"), None)
    return meta if isinstance(meta, ast.Dict) else None


def config_keywords(call: ast.Call) -> dict[str, ast.expr] | str:
    """A triton.Config(...)'s meta-parameters and keywords, or why they cannot be read."""
    meta = config_meta(call)
    if meta is None or not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in meta.keys):
        return f"`{ast.unparse(call)}` does not give its meta-parameters as a literal dict"
    out: dict[str, ast.expr] = {k.value: v for k, v in zip(meta.keys, meta.values, strict=True)}  # type: ignore[union-attr]
    out.update(zip(("num_warps", "num_stages"), call.args[1:3], strict=False))
    out.update({k.arg: k.value for k in call.keywords if k.arg and k.arg != "kwargs"})
    return out


def make_run(where: str, keywords: dict[str, Value]) -> Run:
    values = {
        "num_warps": Value(str(DEFAULT_NUM_WARPS), frozenset({DEFAULT_NUM_WARPS})),
        "num_stages": Value(str(DEFAULT_NUM_STAGES), frozenset({DEFAULT_NUM_STAGES})),
        **keywords,
    }
    return Run(where, values, frozenset(keywords))


def config_calls(tree: ast.Module, fn: ast.FunctionDef) -> list[ast.Call] | None:
    """The triton.Config(...) calls of `fn`'s autotune (None without one): those of a literal list, or of
    the list the code that builds them evaluates to. Raises BuilderError when that cannot be evaluated."""
    try:
        return autotune_configs(fn)
    except VariantError:
        return literal_calls(tree, concrete_configs(tree, fn) or ())


def kernel_runs(res: Resolver, fn: ast.FunctionDef, sites: list[ast.Call]) -> list[Run] | str:
    site_kw = [{k.arg: res.value(k.value) for k in s.keywords if k.arg} for s in sites]
    try:
        configs = config_calls(res.tree, fn)
    except BuilderError as e:
        return f"{UNREADABLE.format(kernel=fn.name)} ({e})"
    if configs is None:
        return [
            make_run(f"the launch of {fn.name} at line {s.lineno}", kw)
            for s, kw in zip(sites, site_kw, strict=True)
        ]
    runs = []
    for i, call in enumerate(configs, 1):
        cfg = config_keywords(call)
        if isinstance(cfg, str):
            return cfg
        values = {k: res.value(v) for k, v in cfg.items()}
        for s, kw in zip(sites, site_kw, strict=True):
            at = f" (launch at line {s.lineno})" if len(sites) > 1 else ""
            runs.append(make_run(f"config {i} of {fn.name}{at}", {**values, **kw}))
    return runs


def grid_text(res: Resolver, site: ast.Call) -> str:
    grid = site.func.slice  # type: ignore[attr-defined]
    return res.value(grid).text


def facts(tree: ast.Module) -> Facts:
    res = Resolver(tree)
    kernels = find_kernels(tree)
    launched, runs, grids = [], {}, {}
    for name, fn in kernels.items():
        sites = launch_sites(tree, name)
        if sites:
            launched.append(name)
            runs[name] = kernel_runs(res, fn, sites)
            grids[name] = {grid_text(res, s) for s in sites}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    model_name = "ModelNew" if "ModelNew" in classes else "Model"
    return Facts(tree, kernels, launched, runs, grids, classes.get(model_name), model_name)
