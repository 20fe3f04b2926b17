"""Cutting long messages for a prompt without cutting a sentence in half."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?:;](?=\s)")


def clip_sentences(text: str, limit: int) -> str:
    """`text` on one line, cut after its last whole sentence within `limit` chars (a word boundary and
    '...' when the first sentence alone is longer)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit)]
    if ends and ends[-1] >= limit // 3:
        return text[: ends[-1]] + " ..."
    cut = text.rfind(" ", 0, limit - 4)
    return text[: cut if cut > 0 else limit - 4] + " ..."
