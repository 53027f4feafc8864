"""Ask the index a question: embed it with the index's model and return the top-k chunks."""

from __future__ import annotations

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
