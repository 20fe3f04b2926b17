"""Pulling the candidate's Python/Triton source out of an LLM reply.

Replies come in many shapes: one fenced block, several (drafts, kernels and ModelNew apart, shell
commands), prose around the code, no fences at all, a reasoning model's <think> section first, a final
fence the model never closed. Every string either gives code that parses and defines ModelNew, or raises
ExtractError; nothing else.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from dataclasses import dataclass

PYTHON_LANGS = frozenset({"", "python", "python3", "py", "py3", "triton", "ipython"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*+)(?P<fence>`{3,}+|~{3,}+)(?P<info>[^\n`]*+)$")
_THINK_OPEN = re.compile(r"<think(?:ing)?>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think(?:ing)?>", re.IGNORECASE)
_DEFINES_MODELNEW = re.compile(r"^[ \t]*(class[ \t]+ModelNew\b|ModelNew[ \t]*=)", re.MULTILINE)
_HAS_JIT = re.compile(r"@[ \t]*triton\.jit\b")
_CODE_START = re.compile(r"^(import |from \S+ import |@|def |class |#)")
_MAX_TRAILING_TRIMS = 40


class ExtractError(ValueError):
    """The reply gives no usable code. `code` holds the text that was tried, when there was some."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class NoCodeError(ExtractError):
    """The reply holds no Python code defining ModelNew."""


class CodeSyntaxError(ExtractError):
    """The reply's code does not parse as Python."""


@dataclass
class _Block:
    lang: str
    text: str


def _fenced_blocks(text: str) -> tuple[list[_Block], str]:
    """Fenced blocks in order, and the text outside them.

    A closing fence is the opening's character, at least as long, with no info string (CommonMark). A
    fence line *with* an info string inside a block ('```python') starts a new block: models that forget
    to close one block before the next do this, and such a line is never valid Python anyway. A block
    the reply never closes runs to the end.
    """
    blocks: list[_Block] = []
    outside: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            outside.append(lines[i])
            i += 1
            continue
        fence, indent, info = opening["fence"], opening["indent"], opening["info"].strip()
        lang = info.split()[0].lower().strip("{.}") if info else ""
        body: list[str] = []
        i += 1
        while i < len(lines):
            inner = _FENCE.match(lines[i])
            if inner and inner["info"].strip():
                break  # reopened without closing: this line opens the next block
            if inner and inner["fence"][0] == fence[0] and len(inner["fence"]) >= len(fence):
                i += 1
                break
            line = lines[i]
            body.append(line[len(indent) :] if indent and line.startswith(indent) else line)
            i += 1
        blocks.append(_Block(lang, "\n".join(body)))
    return blocks, "\n".join(outside)


def _parse(code: str) -> ast.Module | SyntaxError:
    """The module, or the error (null bytes, lone surrogates and too-deep nesting become SyntaxErrors)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for '\d' and the like is not our business
            return ast.parse(code)
    except SyntaxError as e:
        return e
    except (ValueError, RecursionError, MemoryError) as e:
        return SyntaxError(f"{type(e).__name__}: {e}")


def _parses(code: str) -> bool:
    return isinstance(_parse(_clean(code)), ast.Module)


def _clean(code: str) -> str:
    return textwrap.dedent(code).strip("\n") + "\n"


def _defines_modelnew(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            return True
        if isinstance(node, ast.Name) and node.id == "ModelNew" and isinstance(node.ctx, ast.Store):
            return True
    return False


def _checked(code: str) -> str:
    code = _clean(code)
    tree = _parse(code)
    if isinstance(tree, SyntaxError):
        where = f" at line {tree.lineno}" if tree.lineno else ""
        line = ""
        if tree.lineno and 0 < tree.lineno <= code.count("\n"):
            text = code.split("\n")[tree.lineno - 1].strip()
            line = f": {text[:120]!r}" if text else ""
        raise CodeSyntaxError(f"the reply's code does not parse as Python: {tree.msg}{where}{line}", code)
    if not _defines_modelnew(tree):
        raise NoCodeError("the reply's code defines no ModelNew (only mentions it)", code)
    return code


def _pick_block(blocks: list[_Block]) -> str | None:
    """The code among fenced blocks, or None when no block defines ModelNew."""
    python = [b for b in blocks if b.lang in PYTHON_LANGS] or blocks
    defining = [i for i, b in enumerate(python) if _DEFINES_MODELNEW.search(b.text)]
    if not defining:
        return None
    complete = [python[i].text for i in defining if _HAS_JIT.search(python[i].text)]
    if complete:
        # The last one is the answer; earlier ones are drafts or an echo of the current code. Even when the
        # last does not parse (cut off at the token limit), falling back to an echo would only re-run it.
        return complete[-1]
    last = defining[-1]
    if not any(_HAS_JIT.search(b.text) for b in python[:last]):
        return python[last].text
    # Kernels in one block, ModelNew in another: join them in order, keeping only blocks that are module
    # code. An excerpt ('    num_warps=8,'), program output in a bare fence or a usage line would break or
    # pollute the whole.
    parts = [b.text for b in python[:last] if _is_module_code(b.text)]
    return "\n\n\n".join(part.strip("\n") for part in [*parts, python[last].text])


def _is_module_code(code: str) -> bool:
    """Parses as it stands (not dedented) and imports or defines something at top level."""
    tree = _parse(code.strip("\n") + "\n")
    definitions = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return isinstance(tree, ast.Module) and any(isinstance(node, definitions) for node in tree.body)


def _unfenced(text: str) -> str | None:
    """Code given without fences, possibly after a line or two of prose and before some more."""
    if not _DEFINES_MODELNEW.search(text):
        return None
    if _parses(text):
        return text
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), 0)
    body = lines[start:]
    for _ in range(_MAX_TRAILING_TRIMS):
        while body and not body[-1].strip():
            body.pop()
        if not body:
            break
        if _parses("\n".join(body)):
            return "\n".join(body)
        if body[-1][:1].isspace():
            break  # an indented last line is code, so the syntax error is real
        body.pop()  # trailing prose sits at column 0
    return "\n".join(lines[start:])


def _from_text(text: str) -> str | None:
    blocks, outside = _fenced_blocks(text)
    code = _pick_block(blocks)
    return code if code is not None else _unfenced(outside)


def _split_think(reply: str) -> tuple[str, str]:
    """(answer, thoughts): text outside <think>...</think> sections, and the text inside them."""
    answer: list[str] = []
    thoughts: list[str] = []
    closes = list(_THINK_CLOSE.finditer(reply))
    opens = list(_THINK_OPEN.finditer(reply))
    if closes and (not opens or opens[0].start() > closes[0].start()):
        # The opening tag was in the prompt's chat template: everything before the first close is thought.
        thoughts.append(reply[: closes[0].start()])
        reply = reply[closes[0].end() :]
    pos = 0
    while True:
        opening = _THINK_OPEN.search(reply, pos)
        if not opening:
            answer.append(reply[pos:])
            break
        answer.append(reply[pos : opening.start()])
        closing = _THINK_CLOSE.search(reply, opening.end())
        if not closing:  # unterminated: the model ran out of tokens while thinking
            thoughts.append(reply[opening.end() :])
            break
        thoughts.append(reply[opening.end() : closing.start()])
        pos = closing.end()
    return "\n".join(answer), "\n".join(thoughts)


def extract_code(reply: str) -> str:
    """The Python source of the candidate in `reply`, ending in one newline.

    Raises NoCodeError (no code defining ModelNew) or CodeSyntaxError (it does not parse), both
    ExtractError, a ValueError.
    """
    if not isinstance(reply, str):
        raise NoCodeError(f"reply is {type(reply).__name__}, not text")
    text = reply.replace("\r\n", "\n").replace("\r", "\n")
    answer, thoughts = _split_think(text)
    code = _from_text(answer)
    if code is None and thoughts:
        code = _from_text(thoughts)  # only when nothing outside the think section is code
    if code is None:
        raise NoCodeError("reply contains no Python code block defining ModelNew")
    return _checked(code)


_HARNESS_DEFS = re.compile(r"^(get_inputs|get_init_inputs|test_\w*|Test\w*)$")


def _harness_part(node: ast.stmt, after_modelnew: bool) -> str | None:
    """What `node` is when it is test harness the output rules forbid, else None."""
    if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
        return "the `if __name__` block"
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and _HARNESS_DEFS.match(
        node.name
    ):
        return f"`{node.name}`"
    if after_modelnew and isinstance(node, ast.Expr | ast.For | ast.While | ast.With | ast.Assert):
        return f"top-level `{ast.unparse(node).splitlines()[0][:60]}`"
    return None


def strip_harness(code: str) -> tuple[str, list[str]]:
    """`code` without what the output rules forbid after the kernel: `if __name__` blocks, `get_inputs` /
    `get_init_inputs`, test functions and top-level statements run after ModelNew (calls, loops, asserts).

    Such code would run at import in the evaluation worker (spending its time limit, printing) or define the
    problem's own inputs; it is cut rather than the reply refused, and the caller records what was cut.
    Top-level assignments stay: ModelNew may read them.
    """
    tree = _parse(code)
    if not isinstance(tree, ast.Module):
        return code, []
    lines = code.split("\n")
    removed: list[str] = []
    drop: set[int] = set()
    after = False
    for node in tree.body:
        what = _harness_part(node, after)
        if isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            after = True
        if what is None:
            continue
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        drop.update(range(first - 1, (node.end_lineno or node.lineno)))
        removed.append(what)
    if not removed:
        return code, []
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop)
    return re.sub(r"\n{3,}", "\n\n\n", kept).rstrip("\n") + "\n", removed
