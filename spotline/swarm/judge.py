"""The LLM judge through the gateway, and how far to trust it.

Why calibration decides whether the judge gates: a judge is a model whose own error rate is
unknown until measured. `calibrate` runs a judge route over committed answers labelled pass/fail
(data/judge_calibration/) and records agreement (true-positive and true-negative rates, Cohen's
kappa) and parse rate in the object store. A swarm reads that record: a route below the floor,
or never calibrated, is *advisory*: its verdicts are shown, not counted. Plain Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotline.llm.gateway import Gateway
from spotline.llm.types import LLMCallFailed
from spotline.storage import ObjectStore
from spotline.swarm.fire import Exchange
from spotline.swarm.gate import Calibration, agreement
from spotline.swarm.grading import FAIL, PASS
from spotline.swarm.suite import SuiteItem

PROMPT = "swarm_judge"
_CHARS = {"context": 900, "question": 600, "answer": 700}  # what the judge sees of each, at most


def judge_inputs(category: str, question: str, context: list[str], answer: str) -> dict[str, str]:
    return {"category": category, "context": " ".join(context)[: _CHARS["context"]],
            "question": question[: _CHARS["question"]], "answer": answer[: _CHARS["answer"]]}


def ask(gateway: Gateway, use: str, item: SuiteItem, ex: Exchange) -> tuple[dict[str, Any] | None, str | None]:
    """The judge's verdict on one answer, or why there is none (never raises for a model failure)."""
    try:
        result = gateway.call(use, prompt=PROMPT, variables=judge_inputs(item.category, item.text, ex.context,
                                                                         ex.answer or ""))
    except LLMCallFailed as exc:
        return None, str(exc)[:300]
    return result.data, None


@dataclass
class LabelledAnswer:
    id: str
    category: str
    question: str
    context: list[str]
    answer: str
    label: str  # pass | fail
    build: str = ""
    note: str = ""


def load_labelled(path: Path) -> list[LabelledAnswer]:
    rows = [LabelledAnswer(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    bad = [r.id for r in rows if r.label not in (PASS, FAIL)]
    if bad:
        raise ValueError(f"{path}: labels must be pass or fail ({bad[:3]})")
    return rows


def reviewed(store: ObjectStore, runs_prefix: str) -> list[LabelledAnswer]:
    """Failures a reviewer marked in a swarm run's failures.jsonl: ``false_positive: true`` means the
    answer was fine (label pass), ``false`` confirms the failure (label fail); unmarked rows are
    left out. Only answers the judge itself graded count (the checks passed them): the judge never
    sees an answer a check failed, so those would say nothing about it."""
    found: dict[str, LabelledAnswer] = {}
    for info in store.list(runs_prefix):
        if not info.key.endswith("/failures.jsonl"):
            continue
        for line in store.get(info.key).decode().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("false_positive"), bool) or row.get("answer") is None:
                continue
            if set(row.get("failures") or []) - {"judge"}:
                continue
            run = info.key[len(runs_prefix):].split("/", 1)[0]
            found[f"review:{run}:{row['id']}"] = LabelledAnswer(
                f"review:{run}:{row['id']}", row["category"], row.get("prompt", ""), row.get("context") or [],
                row["answer"], PASS if row["false_positive"] else FAIL, "reviewed",
                f"reviewer: {'false positive' if row['false_positive'] else 'confirmed'} ({', '.join(row.get('failures', []))})")
    return list(found.values())


def calibrate(gateway: Gateway, use: str, answers: list[LabelledAnswer], floor: float) -> Calibration:
    """Run the judge route over labelled answers, uncached: the measure is of the model now."""
    calls = [{"use": use, "prompt": PROMPT, "cache": False,
              "variables": judge_inputs(a.category, a.question, a.context, a.answer)} for a in answers]
    results = gateway.map(calls)
    verdicts: list[str | None] = []
    rows = []
    for a, r in zip(answers, results):
        verdict = None if isinstance(r, LLMCallFailed) else (r.data or {}).get("verdict")
        verdicts.append(verdict)
        rows.append({"id": a.id, "build": a.build, "category": a.category, "label": a.label,
                     "verdict": verdict or "error", "agrees": verdict == a.label,
                     "reason": str(r)[:160] if isinstance(r, LLMCallFailed) else (r.data or {}).get("reason", "")})
    tpr, tnr, kappa = agreement([a.label for a in answers], verdicts)
    models = ",".join(m.model_id for _, m in gateway.chain(use))
    return Calibration(use, models, len(answers), sum(v is not None for v in verdicts), tpr, tnr, kappa, floor, rows)


def record_key(store_prefix: str, use: str) -> str:
    return f"{store_prefix}{use}.json"


def save(store: ObjectStore, prefix: str, cal: Calibration) -> str:
    key = record_key(prefix, cal.route)
    body = {k: v for k, v in cal.as_dict().items() if k != "rows"}
    store.put(key, json.dumps(body, indent=2).encode(), "application/json")
    return key


def recorded(store: ObjectStore, prefix: str, use: str) -> dict[str, Any] | None:
    key = record_key(prefix, use)
    if store.head(key) is None:
        return None
    return json.loads(store.get(key))


def gating(store: ObjectStore, prefix: str, use: str, models: str, floor: float,
           command: str = "spotline swarm calibrate") -> tuple[bool, str]:
    """Does this judge route gate? Only with a calibration of the same models at or above the floor."""
    if use == "none":
        return False, "no judge: deterministic checks only"
    rec = recorded(store, prefix, use)
    if rec is None:
        return False, f"judge route {use!r} was never calibrated: advisory (run `{command}`)"
    if rec.get("models") != models:
        return False, f"judge route {use!r} was calibrated on {rec.get('models')}, now runs {models}: advisory"
    if rec["kappa"] < floor:
        return False, (f"judge route {use!r} ({models}) agrees with the calibration set at kappa {rec['kappa']:.2f}, "
                       f"below the {floor:.2f} floor: advisory")
    return True, f"judge route {use!r} ({models}) gates: kappa {rec['kappa']:.2f} >= {floor:.2f}"
