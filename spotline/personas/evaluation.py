"""How well a detector finds the planted PII of a labelled export, and Presidio's own engine as the baseline.

Recall is counted per **label** type: a planted value counts as caught when detected spans cover
every letter and digit of it, whatever type the detector gave it (what matters is that it is
gone). Precision is counted per **predicted** type: a detected span is right when it overlaps a
planted value. F2 weighs recall four times as much as precision: a missed value leaks, an
over-redacted word only costs a little context.

The baseline is Presidio's ``BatchAnalyzerEngine`` with the same pattern recognizers Spotline
uses, over a blank spaCy pipeline (tokenizer only: no model can be downloaded here, and the
pattern recognizers need none). It has no known-value layer: its rows for names and addresses
show what patterns alone miss.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

Spans = dict[str, list[tuple[int, int, str]]]  # row -> (start, end, entity)


def presidio_batch_engine(recognizers: list[Any]):
    """Presidio's batch engine with exactly these recognizers and a blank (offline) spaCy pipeline."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class BlankSpacyEngine(SpacyNlpEngine):
        def load(self) -> None:  # instead of spacy.load(model), which downloads a missing model
            self.nlp = {"en": spacy.blank("en")}

    nlp = BlankSpacyEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    nlp.load()
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return BatchAnalyzerEngine(AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"]))


def presidio_spans(engine, rows: list[str], texts: list[str], batch_size: int = 256) -> Spans:
    results = engine.analyze_iterator(texts, language="en", batch_size=batch_size)
    return {row: [(r.start, r.end, r.entity_type) for r in found] for row, found in zip(rows, results)}


def _covered(start: int, end: int, text: str, spans: list[tuple[int, int, str]]) -> bool:
    needed = [i for i in range(start, end) if text[i].isalnum()]
    return all(any(s <= i < e for s, e, _ in spans) for i in needed)


def score(texts: dict[str, str], labels: Iterable[Any], predicted: Spans) -> list[dict[str, Any]]:
    """One row per entity type: labels, caught, recall; detections, right, precision; F2."""
    planted: dict[str, list[tuple[int, int]]] = defaultdict(list)
    caught: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for label in labels:
        if label.row not in texts:
            continue
        planted[label.row].append((label.start, label.end))
        tally = caught[label.entity]
        tally[0] += 1
        tally[1] += _covered(label.start, label.end, texts[label.row], predicted.get(label.row, []))
    precise: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, spans in predicted.items():
        for s, e, entity in spans:
            tally = precise[entity]
            tally[0] += 1
            tally[1] += any(s < pe and ps < e for ps, pe in planted.get(row, []))
    rows = []
    for entity in sorted(set(caught) | set(precise)):
        n, hit = caught.get(entity, [0, 0])
        d, right = precise.get(entity, [0, 0])
        recall = hit / n if n else None
        precision = right / d if d else None
        f2 = (5 * precision * recall / (4 * precision + recall)
              if recall is not None and precision is not None and (precision or recall) else None)
        rows.append({"entity": entity, "planted": n, "caught": hit, "recall": _r(recall),
                     "detected": d, "right": right, "precision": _r(precision), "f2": _r(f2)})
    return rows


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
