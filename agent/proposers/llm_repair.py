"""The LLM proposer's repair prompt (agent/proposers/llm.py): the stage prompt with the failed code in place
of the current code, and the error it gave, long errors clipped in the middle."""

from __future__ import annotations

from agent.prompt.render import environment, fence, split_sections

REPAIR_TEMPLATE = "repair.j2"
_ERROR_HEAD = _ERROR_TAIL = 3000  # chars of a long error shown in a repair prompt


def truncated_reason(max_tokens: int) -> str:
    """What a reply cut at the token limit is told: it names the cut and asks for the whole file, shorter."""
    return (
        f"the reply was cut at the token limit (finish_reason=length, max_tokens={max_tokens}) before its "
        "code was complete: give the complete file again, shorter (no explanation, fewer comments)"
    )


def _clip(text: str) -> str:
    if len(text) <= _ERROR_HEAD + _ERROR_TAIL:
        return text
    cut = len(text) - _ERROR_HEAD - _ERROR_TAIL
    return f"{text[:_ERROR_HEAD]}\n[... {cut} chars cut ...]\n{text[-_ERROR_TAIL:]}"


def _without_current_code(prompt: str) -> str:
    """The stage prompt less its [CURRENT CODE] block: the failed code below replaces it, so that the
    request carries one copy of the kernel instead of two nearly equal ones."""
    sections = split_sections(prompt)
    if "[CURRENT CODE]" not in sections:
        return prompt
    return "".join(text for header, text in sections.items() if header != "[CURRENT CODE]")


def render_repair(prompt: str, code: str, error: str) -> str:
    prompt = _without_current_code(prompt)
    code = code.replace("\r\n", "\n").strip("\n")
    error = _clip(error.replace("\r\n", "\n").strip("\n")) or "(no message)"
    return (
        environment()
        .get_template(REPAIR_TEMPLATE)
        .render(
            prompt=prompt.rstrip("\n"),
            code=code,
            code_fence=fence(code),
            error=error,
            error_fence=fence(error),
        )
    )
