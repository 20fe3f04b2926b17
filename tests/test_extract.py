"""Pulling code out of LLM replies: every shape we have seen, and never an exception but ExtractError."""

from __future__ import annotations

import contextlib
import random
import time

import pytest

from agent.llm.extract import CodeSyntaxError, ExtractError, NoCodeError, extract_code

KERNELS = """import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def scale_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2.0, mask=mask)


def scale(x):
    out = torch.empty_like(x)
    n = x.numel()
    scale_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024, num_warps=4)
    return out
"""

MODEL = """class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return scale(x)
"""

CODE = KERNELS + "\n\n" + MODEL


def fenced(code: str, lang: str = "python", fence: str = "```") -> str:
    return f"{fence}{lang}\n{code}{fence}\n"


@pytest.mark.parametrize(
    ("lang", "fence"),
    [("python", "```"), ("py", "```"), ("", "```"), ("Python", "```"), ("python", "~~~"), ("python", "````")],
)
def test_one_block(lang, fence):
    reply = f"Here is the optimized kernel:\n\n{fenced(CODE, lang, fence)}\nIt uses num_warps=4."
    assert extract_code(reply) == CODE


def test_result_ends_in_one_newline():
    assert extract_code(f"```python\n\n\n{CODE}\n\n\n```").endswith("return scale(x)\n")


def test_windows_line_endings():
    assert extract_code(fenced(CODE).replace("\n", "\r\n")) == CODE


def test_fence_indented_in_a_list():
    indented = "".join(f"   {line}" if line else "" for line in CODE.splitlines(keepends=True))
    reply = f"1. Final code:\n   ```python\n{indented}   ```\n2. Done."
    assert extract_code(reply) == CODE


def test_picks_the_block_with_modelnew_and_jit():
    reply = (
        "First install:\n```bash\npip install triton\n```\n"
        "The reference was:\n```python\nclass Model(nn.Module):\n    pass\n```\n"
        f"My answer:\n{fenced(CODE)}"
        "Use it like:\n```python\nm = ModelNew()\nprint(m(torch.randn(4)))\n```\n"
    )
    assert extract_code(reply) == CODE


def test_last_complete_block_wins_over_a_draft():
    draft = CODE.replace("num_warps=4", "num_warps=2")
    reply = f"Draft:\n{fenced(draft)}\nBetter:\n{fenced(CODE)}"
    assert extract_code(reply) == CODE


def test_a_truncated_answer_after_an_echo_of_the_current_code_is_an_error():
    truncated = CODE[: CODE.index("def forward") + len("def forward(self")]
    reply = f"The current code:\n{fenced(CODE)}\nImproved:\n```python\n{truncated}"
    with pytest.raises(CodeSyntaxError):
        extract_code(reply)


def test_kernels_and_modelnew_in_separate_blocks_are_joined():
    reply = (
        f"Kernels:\n{fenced(KERNELS)}\nThe changed line:\n```python\n    num_warps=8,\n```\n"
        f"Output:\n```\nspeedup: 1.4x\n```\nModule:\n{fenced(MODEL)}"
        "Test:\n```python\nprint(ModelNew()(torch.ones(3)))\n```\n"
    )
    code = extract_code(reply)
    assert code == KERNELS + "\n\n" + MODEL
    assert "speedup" not in code and "print(" not in code


def test_modelnew_block_without_any_kernel_is_returned_alone():
    reply = (
        "```python\nx = 1\n```\n```python\nimport torch.nn as nn\nclass ModelNew(nn.Module):\n    pass\n```"
    )
    assert extract_code(reply) == "import torch.nn as nn\nclass ModelNew(nn.Module):\n    pass\n"


def test_block_reopened_without_closing():
    reply = f"```python\n{KERNELS}```python\n{MODEL}```\n"
    assert extract_code(reply) == CODE


def test_unterminated_final_fence_takes_the_rest():
    reply = f"Here you go:\n```python\n{CODE}"
    assert extract_code(reply) == CODE


def test_no_fences_just_code():
    assert extract_code(CODE) == CODE


def test_no_fences_with_prose_around():
    reply = f"Sure! Here's the improved version.\n\n{CODE}\nThis should be about 10% faster.\nEnjoy"
    assert extract_code(reply) == CODE


def test_unfenced_code_after_fenced_shell_commands():
    reply = f"Run:\n```bash\npython bench.py\n```\n{CODE}"
    assert extract_code(reply) == CODE


def test_think_section_is_ignored():
    thought = "Let me think.\n" + fenced(CODE.replace("num_warps=4", "num_warps=16")) + "Hmm, no.\n" * 2000
    reply = f"<think>\n{thought}</think>\n\nFinal answer:\n{fenced(CODE)}"
    assert extract_code(reply) == CODE


def test_think_without_opening_tag():
    # Some chat templates put '<think>' in the prompt, so the reply starts inside the thoughts.
    reply = f"I could use {fenced(CODE.replace('4', '16'))}</think>\n{fenced(CODE)}"
    assert extract_code(reply) == CODE


def test_code_only_inside_think_is_used_when_nothing_is_outside():
    reply = f"<think>\nThe answer is\n{fenced(CODE)}</think>\nI have given the code above."
    assert extract_code(reply) == CODE


def test_unterminated_think_with_code():
    assert extract_code(f"<think>\nworking...\n{fenced(CODE)}\nstill thinking") == CODE


def test_syntax_error_outside_think_is_not_replaced_by_code_inside():
    broken = CODE.replace("def forward(self, x):", "def forward(self, x)")
    reply = f"<THINK>{fenced(CODE)}</THINK>\n{fenced(broken)}"
    with pytest.raises(CodeSyntaxError):
        extract_code(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   \n\n",
        "I cannot help with that.",
        "```\n```",
        "```python\n```",
        fenced(KERNELS),
        "Use ModelNew as before, with num_warps=8.",
        "<think>I will write class ModelNew next.</think>",
        'x = "\\nclass ModelNew: pass"\n',
    ],
)
def test_no_code(reply):
    with pytest.raises(NoCodeError, match="ModelNew"):
        extract_code(reply)


def test_syntax_error_names_the_error_and_line():
    broken = CODE.replace("def forward(self, x):", "def forward(self, x)")
    line = broken.splitlines().index("    def forward(self, x)") + 1
    with pytest.raises(CodeSyntaxError) as info:
        extract_code(fenced(broken))
    message = str(info.value)
    assert f"line {line}" in message
    assert "def forward(self, x)" in message
    assert "does not parse" in message
    assert info.value.code == broken
    assert isinstance(info.value, ExtractError) and isinstance(info.value, ValueError)


def test_errors_are_value_errors():
    assert issubclass(ExtractError, ValueError)
    assert issubclass(NoCodeError, ExtractError)
    assert issubclass(CodeSyntaxError, ExtractError)


def test_non_string_is_an_extract_error():
    with pytest.raises(ExtractError):
        extract_code(b"class ModelNew: pass")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reply",
    [
        "\x00" * 100,
        "```python\nclass ModelNew:\x00 pass\n```",
        "class ModelNew:\n    pass\n\ud800",
        "```python\n" + "(" * 5000 + "\nclass ModelNew: pass\n```",
        "```python\nclass ModelNew:\n    x = '\\d'\n" + "\t\t  \x0c\n" * 50 + "```",
        "`" * 100_000,
        "~" * 100_000 + "`",
        "```" + " " * 100_000 + "`\nclass ModelNew: pass",
        "<think>" * 10_000 + "</think>" * 10_000,
        "class ModelNew\n" * 20_000,
        bytes(range(256)).decode("latin-1") * 100,
    ],
    ids=lambda reply: f"{reply[:12]!r}..{len(reply)}",
)
def test_hostile_input_gives_code_or_extract_error(reply):
    start = time.monotonic()
    with contextlib.suppress(ExtractError):
        assert isinstance(extract_code(reply), str)
    assert time.monotonic() - start < 5


def test_huge_junk_is_fast():
    rng = random.Random(1)
    junk = "".join(rng.choice("abc xyz\n()[]{}:=#`~'\"\\") for _ in range(2_000_000))
    start = time.monotonic()
    with pytest.raises(ExtractError):
        extract_code(junk)
    assert time.monotonic() - start < 5


PIECES = [
    "```",
    "```python",
    "~~~",
    "````py",
    "<think>",
    "</think>",
    "class ModelNew(nn.Module):",
    "class ModelNew:",
    "    pass",
    "@triton.jit",
    "def f(x):",
    "    return x",
    "import torch",
    "ModelNew = None",
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    " ",
    "\x00",
    "\ud800",
    "é",
    "(",
    ")",
    "'''",
    '"',
    "\\",
    "#",
    "Here is the code:",
]


def test_random_replies_give_code_or_extract_error():
    rng = random.Random(0)
    outcomes = {"code": 0, "error": 0}
    for _ in range(3000):
        if rng.random() < 0.5:
            reply = "".join(rng.choice(PIECES) + rng.choice(["", "\n"]) for _ in range(rng.randint(0, 40)))
        else:
            reply = "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 200)))
        try:
            code = extract_code(reply)
        except ExtractError:
            outcomes["error"] += 1
            continue
        assert isinstance(code, str) and "ModelNew" in code and code.endswith("\n")
        outcomes["code"] += 1
    assert outcomes["code"] > 0 and outcomes["error"] > 0


def test_truncated_and_mangled_replies_give_code_or_extract_error():
    rng = random.Random(2)
    reply = f"<think>plan</think>\nText\n{fenced(KERNELS)}\n{fenced(MODEL)}\nDone."
    for _ in range(500):
        chars = list(reply[: rng.randint(0, len(reply))])
        for _ in range(rng.randint(0, 5)):
            if chars:
                chars[rng.randrange(len(chars))] = rng.choice("`~\n x(:")
        with contextlib.suppress(ExtractError):
            assert "ModelNew" in extract_code("".join(chars))
