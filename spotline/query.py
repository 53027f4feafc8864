"""Ask the index a question: embed it with the index's model and return the top-k chunks."""

from __future__ import annotations

import re

from spotline.errors import brief
from spotline.index.records import SearchHit
from spotline.resources import Resources, get_resources


def search(question: str, k: int = 5, res: Resources | None = None) -> list[SearchHit]:
    question = question.strip()
    if not question:
        raise ValueError("empty question")
    if k < 1:
        raise ValueError("k must be at least 1")
    res = res or get_resources()
    spec = res.embedder_spec
    res.index.ensure(spec.model_id, spec.dimension)  # a query with another model's vectors is meaningless
    vector = res.embedder.embed([question]).vectors[0]
    return res.index.search(vector.tolist(), k)


_WORD = re.compile(r"[\w%.]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def snippet(text: str, question: str, limit: int = 240) -> str:
    """The part of a hit worth showing: from the sentence that shares the most words with the
    question, cut at a word. A chunk's first 200 characters are often its heading and preamble,
    and stopped just before the answer."""
    asked = {w.lower() for w in _WORD.findall(question) if len(w) > 3}
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    if not asked or not sentences:
        return brief(text, limit)
    scores = [len(asked & {w.lower() for w in _WORD.findall(s)}) for s in sentences]
    best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
    start = best if scores[best] else 0
    return brief(" ".join(sentences[start:]), limit)
