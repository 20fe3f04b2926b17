"""Autotune configs built by code (`configs=get_autotune_config()`, a comprehension, a module constant), as
Triton's matmul tutorial and many libraries write them, made concrete so the rules can read them and the
search can edit them.

The builder runs in a child process (agent/source/_config_child.py: `python -I`, 1 GiB of memory, a few
seconds) that executes only the source's module-level function definitions and assignments, with a
stand-in `triton` (Config, cdiv, next_power_of_2, and the driver answering as the target GPU) and a few
builtins; code reaching for dunder attributes is refused before it runs. `written_out` then replaces the
`configs=` expression with the literal list, so the stages edit it as any literal list; where the stage
allows fewer configs than the builder made, configs that repeat another's BLOCK sizes are dropped (never
the one the autotuner chose), every BLOCK-size combination is kept, and the note says which.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evaluation import confine
from agent.prompt.gpus import target_gpu
from agent.source.variants import (
    VariantError,
    apply_edits,
    decorator_name,
    find_kernels,
    node_span,
    offsets_of,
    parse_source,
)

CHILD = Path(__file__).with_name("_config_child.py")
TIME_LIMIT_S = 10.0


class BuilderError(VariantError):
    """The configs could not be evaluated (the builder needs more than the stand-in gives, or is refused)."""


@dataclass(frozen=True)
class ConfigValue:
    """One concrete triton.Config."""

    kwargs: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int
    num_ctas: int = 1
    maxnreg: int | None = None

    def text(self, config_name: str) -> str:
        meta = ", ".join(f"{k!r}: {v!r}" for k, v in self.kwargs).replace("'", '"')
        extra = f", num_ctas={self.num_ctas}" if self.num_ctas != 1 else ""
        extra += f", maxnreg={self.maxnreg}" if self.maxnreg is not None else ""
        return f"{config_name}({{{meta}}}, num_warps={self.num_warps}, num_stages={self.num_stages}{extra})"

    def matches(self, chosen: dict[str, Any]) -> bool:
        """Whether this is the config an autotuner reported choosing (agent.evaluation.triton_hooks)."""
        return {**dict(self.kwargs), "num_warps": self.num_warps, "num_stages": self.num_stages} == chosen


def configs_expression(fn: ast.FunctionDef) -> ast.expr | None:
    """The `configs` argument of the kernel's @triton.autotune, when it is not a literal list."""
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and decorator_name(dec).endswith("autotune"):
            expr = next((k.value for k in dec.keywords if k.arg == "configs"), None)
            if expr is None and dec.args:
                expr = dec.args[0]
            return None if isinstance(expr, ast.List | ast.Tuple) else expr
    return None


def _helpers(tree: ast.Module) -> list[str]:
    """The module-level statements a builder may use: undecorated functions and plain assignments."""
    keep = [
        st
        for st in tree.body
        if (isinstance(st, ast.FunctionDef) and not st.decorator_list)
        or (isinstance(st, ast.Assign | ast.AnnAssign) and st.value is not None)
    ]
    return [ast.unparse(st) for st in keep]


def _refuse_unsafe(texts: list[str]) -> None:
    for text in texts:
        for node in ast.walk(ast.parse(text)):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.id
                if isinstance(node, ast.Name)
                else ""
            )
            if name.startswith("__") or isinstance(node, ast.Import | ast.ImportFrom | ast.Global):
                raise BuilderError(
                    f"the config builder uses `{name or type(node).__name__}`, which is not run"
                )


def _gpu() -> dict[str, int]:
    spec = target_gpu()
    major, minor = (int(x) for x in (spec.compute_capability or "9.0").split("."))
    return {
        "arch": major * 10 + minor,
        "warpSize": spec.warp_size or 32,
        "multiprocessor_count": spec.sms or 132,
        "max_shared_mem": int((spec.max_smem_per_block_kb or 227) * 1024),
        "max_num_regs": 65536,
    }


@functools.lru_cache(maxsize=256)
def _evaluate(statements: tuple[str, ...], expr: str, gpu_json: str) -> tuple[ConfigValue, ...]:
    _refuse_unsafe([*statements, expr])
    request = json.dumps({"statements": list(statements), "expr": expr, "gpu": json.loads(gpu_json)})

    base, box = confine.make_box(None)
    try:  # the candidate's own code: in a bwrap box without capabilities, like ncu's target
        done = subprocess.run(
            confine.box_for([sys.executable, "-I", str(CHILD)], box, [], gpu=False),
            input=request,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            env={"PATH": os.environ.get("PATH", "")},
            cwd=box,
        )
        reply = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        raise BuilderError(f"`{expr}` did not finish within {TIME_LIMIT_S:g} s") from None
    except (json.JSONDecodeError, IndexError):
        raise BuilderError(f"`{expr}` could not be evaluated: {done.stderr.strip()[-300:]}") from None
    finally:
        confine.remove_box(base, None)
    if "error" in reply:
        raise BuilderError(f"`{expr}` could not be evaluated here ({reply['error']})")
    return tuple(
        ConfigValue(
            tuple(c["kwargs"].items()), int(c["num_warps"]), int(c["num_stages"]), c["num_ctas"], c["maxnreg"]
        )
        for c in reply["configs"]
    )


def concrete_configs(tree: ast.Module, fn: ast.FunctionDef) -> tuple[ConfigValue, ...] | None:
    """The configs of `fn`'s autotune when code builds them (None when they are a literal list or there is
    no autotune). Raises BuilderError when they cannot be evaluated."""
    expr = configs_expression(fn)
    if expr is None:
        return None
    return _evaluate(tuple(_helpers(tree)), ast.unparse(expr), json.dumps(_gpu(), sort_keys=True))


def config_name(tree: ast.Module) -> str:
    """How the source names triton.Config."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "triton"
            and any(a.name == "Config" and a.asname is None for a in node.names)
        ):
            return "Config"
    return "triton.Config"


def literal_calls(tree: ast.Module, configs: tuple[ConfigValue, ...]) -> list[ast.Call]:
    """The configs as the AST of a literal list would hold them (for the rules that read configs)."""
    name = config_name(tree)
    return [ast.parse(c.text(name), mode="eval").body for c in configs]  # type: ignore[misc]


def _blocks(c: ConfigValue) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in c.kwargs if k.upper().startswith("BLOCK"))


def prune(
    configs: tuple[ConfigValue, ...], most: int | None, chosen: dict[str, Any] | None
) -> tuple[tuple[ConfigValue, ...], str]:
    """At most `most` configs where that keeps every BLOCK-size combination (a stage with a most keeps
    BLOCK sizes): configs repeating an earlier one's BLOCK sizes go first, never the one the autotuner
    chose; the note says which went, or why more than `most` stay."""
    if most is None or len(configs) <= most:
        return configs, ""
    keep = list(range(len(configs)))
    seen: set[tuple[tuple[str, Any], ...]] = set()
    repeats = []
    for i, c in enumerate(configs):
        if _blocks(c) in seen and not (chosen and c.matches(chosen)):
            repeats.append(i)
        seen.add(_blocks(c))
    for i in repeats[: len(configs) - most]:
        keep.remove(i)
    note = f"{len(configs)} configs, this stage allows {most}"
    if len(keep) < len(configs):
        dropped = ", ".join(str(i + 1) for i in range(len(configs)) if i not in keep)
        note += f": dropped config {dropped} (their BLOCK sizes stay in other configs)"
    if len(keep) > most:
        note += f"; {len(keep)} kept, one per BLOCK-size combination the kernel runs, which this stage keeps"
    return tuple(configs[i] for i in keep), note


def written_out(
    source: str, most: int | None = None, chosen: dict[str, dict[str, Any]] | None = None
) -> tuple[str, list[str], list[str]]:
    """`source` with every code-built autotune config list replaced by the literal list it evaluates to
    (at most `most` configs each), a note per kernel on what was done, and one per kernel on why not."""
    tree = parse_source(source)
    edits, notes, failed = [], [], []
    for name, fn in find_kernels(tree).items():
        expr = configs_expression(fn)
        if expr is None:
            continue
        try:
            configs = concrete_configs(tree, fn)
        except BuilderError as e:
            failed.append(f"{name}: {e}")
            continue
        assert configs is not None
        kept, pruned = prune(configs, most, (chosen or {}).get(name))
        indent = " " * (fn.col_offset + 8)
        items = "".join(f"\n{indent}{c.text(config_name(tree))}," for c in kept)
        edits.append((*node_span(offsets_of(source), expr), f"[{items}\n{' ' * (fn.col_offset + 4)}]"))
        notes.append(
            f"{name}: the {len(configs)} configs `{ast.unparse(expr)}` builds, written out"
            + (f"; {pruned}" if pruned else "")
        )
    return (apply_edits(source, edits) if edits else source), notes, failed
