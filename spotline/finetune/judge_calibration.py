"""Is the head-to-head judge fit to gate a promotion? Measured, not assumed.

The fine-tune gate asks an LLM judge which of two answers is better (`finetune_judge`, both orders).
A judge with a position bias, or one that prefers the house style to the right fact, would promote
a worse model. So the judge's win rate gates only when its route has a record under
``<route>-pairwise`` with Cohen's kappa at or above the floor (the same record format, and the same
:func:`spotline.swarm.judge.gating` check, as the swarm judge's calibration); without one, or below
the floor, it is shown as advisory.

The calibration set (data/feedback/judge_pairs.jsonl, built by data/build_sample_feedback.py) holds
pairs with a known better answer: near misses from the same help-centre page, fluent wrong facts,
non-answers. Each pair is asked in both orders, so the labels are half "A", half "B": a judge that
always answers "A" agrees half the time and scores kappa 0. Plain Python, no Prefect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotline.swarm.gate import FAIL, PASS, Calibration, agreement

JUDGE_PROMPT = "finetune_judge"
SUFFIX = "-pairwise"  # the record a route's head-to-head calibration is kept under
_AS = {"A": PASS, "B": FAIL}  # binary agreement over A/B: "B wins" plays the positive class


@dataclass(frozen=True)
class JudgePair:
    id: str
    kind: str
    question: str
    reference: str
    better: str
    worse: str


def load_pairs(path: Path) -> list[JudgePair]:
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"id", "question", "reference", "better", "worse"} - set(row)
        if missing:
            raise ValueError(f"{path}:{n}: missing {sorted(missing)}")
        pairs.append(JudgePair(row["id"], row.get("kind", ""), row["question"], row["reference"], row["better"],
                               row["worse"]))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def judge_call(use: str, question: str, reference: str, answer_a: str, answer_b: str, max_chars: int = 600,
               **options: Any) -> dict[str, Any]:
    """One `finetune_judge` call (gateway.map arguments): the gate and its calibration ask the same way."""
    return {"use": use, "prompt": JUDGE_PROMPT, **options,
            "variables": {"question": question[:max_chars], "reference": reference[:max_chars],
                          "answer_a": answer_a[:max_chars], "answer_b": answer_b[:max_chars]}}


def calls(use: str, pairs: list[JudgePair]) -> tuple[list[dict[str, Any]], list[str]]:
    """Two judge calls per pair (better first, then better second) and the winner each should name.
    Uncached: the measure is of the model as it is now."""
    out, labels = [], []
    for p in pairs:
        for a, b, label in ((p.better, p.worse, "A"), (p.worse, p.better, "B")):
            out.append(judge_call(use, p.question, p.reference, a, b, cache=False))
            labels.append(label)
    return out, labels


def score(use: str, models: str, pairs: list[JudgePair], labels: list[str], winners: list[str | None],
          floor: float) -> Calibration:
    """Agreement of the judge's winners with the labels. A call that failed or named no winner counts
    as a disagreement: an unparseable judge is not a judge that agrees."""
    verdicts = [_AS.get(w) if w else None for w in winners]
    tpr, tnr, kappa = agreement([_AS[label] for label in labels], verdicts)
    rows = [{"id": f"{p.id}:{order}", "kind": p.kind, "label": label, "verdict": w or "error", "agrees": w == label}
            for (p, order), label, w in zip(((p, o) for p in pairs for o in ("better-first", "better-second")),
                                            labels, winners)]
    return Calibration(use + SUFFIX, models, len(labels), sum(w in _AS for w in winners), tpr, tnr, kappa, floor, rows)


def calibrate(gateway: Any, use: str, pairs: list[JudgePair], floor: float) -> Calibration:
    """Run the judge route over the pairs and score it."""
    from spotline.llm.types import LLMCallFailed

    requests, labels = calls(use, pairs)
    results = gateway.map(requests)
    winners = [None if isinstance(r, LLMCallFailed) else (r.data or {}).get("winner") for r in results]
    models = ",".join(m.model_id for _, m in gateway.chain(use))
    return score(use, models, pairs, labels, winners, floor)


def by_kind(cal: Calibration) -> dict[str, float]:
    """Agreement by kind of pair (near-miss, wrong-fact, non-answer)."""
    kinds: dict[str, list[bool]] = {}
    for row in cal.rows:
        kinds.setdefault(row["kind"], []).append(row["agrees"])
    return {k: round(sum(v) / len(v), 3) for k, v in sorted(kinds.items())}
