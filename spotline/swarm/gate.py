"""The release gate's arithmetic and the judge's calibration. Plain Python.

Why a confidence interval: 3 failures in 50 answers is 6% and also "somewhere between 2% and
16%"; the gate decides on the measured rate and shows how sure it is. Why an inconclusive
outcome: when too many answers have no verdict (the judge could not grade them) or never came
back (the target was throttling), a pass would be a guess, and so would a failure.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from spotline.swarm.grading import FAIL, INCONCLUSIVE, PASS, UNANSWERED, Grade

GATE_PASS, GATE_FAIL, GATE_INCONCLUSIVE = "pass", "fail", "inconclusive"
EXIT_CODES = {GATE_PASS: 0, GATE_FAIL: 1, GATE_INCONCLUSIVE: 2}


def wilson(failures: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: honest at small n and at 0 failures."""
    if n == 0:
        return 0.0, 1.0
    p = failures / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Decision:
    outcome: str  # pass | fail | inconclusive
    total: int
    passed: int
    failed: int
    inconclusive: int
    unanswered: int
    failure_rate: float
    interval: tuple[float, float]
    threshold: float
    inconclusive_share: float
    budget: float
    top_failures: list[tuple[str, int]] = field(default_factory=list)  # failure category, answers
    failing_prompt_categories: list[tuple[str, int]] = field(default_factory=list)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(grades: Iterable[Grade], threshold: float, budget: float) -> Decision:
    grades = list(grades)
    outcomes = Counter(g.outcome for g in grades)
    graded = outcomes[PASS] + outcomes[FAIL]
    rate = outcomes[FAIL] / graded if graded else 0.0
    unsure = outcomes[INCONCLUSIVE] + outcomes[UNANSWERED]
    share = unsure / len(grades) if grades else 1.0
    top = Counter(f for g in grades if g.outcome == FAIL for f in g.failures).most_common()
    by_prompt = Counter(g.category for g in grades if g.outcome == FAIL).most_common()
    d = Decision(GATE_PASS, len(grades), outcomes[PASS], outcomes[FAIL], outcomes[INCONCLUSIVE],
                 outcomes[UNANSWERED], rate, wilson(outcomes[FAIL], graded), threshold, share, budget, top, by_prompt)
    lo, hi = d.interval
    worst = ", ".join(f"{c} ({n})" for c, n in top[:3])
    if grades and outcomes[FAIL] / len(grades) > threshold:
        # Failures above the threshold even if every unsure answer had passed: a failed release,
        # however many answers have no verdict.
        d.outcome = GATE_FAIL
        d.message = (f"failed: {rate:.1%} of {graded} answers failed (95% CI {lo:.1%}–{hi:.1%}), "
                     f"over the {threshold:.1%} threshold; top failures: {worst}")
    elif not grades or share > budget:
        d.outcome = GATE_INCONCLUSIVE
        d.message = (f"inconclusive: {unsure} of {len(grades)} answers have no verdict "
                     f"({outcomes[INCONCLUSIVE]} judge errors, {outcomes[UNANSWERED]} unanswered), "
                     f"over the {budget:.0%} budget")
    elif rate > threshold:
        d.outcome = GATE_FAIL
        d.message = (f"failed: {rate:.1%} of {graded} answers failed (95% CI {lo:.1%}–{hi:.1%}), "
                     f"over the {threshold:.1%} threshold; top failures: {worst}")
    else:
        d.message = f"passed: {rate:.1%} of {graded} answers failed (95% CI {lo:.1%}–{hi:.1%}), threshold {threshold:.1%}"
    return d


@dataclass
class Calibration:
    """A judge route against labelled answers. Positive = "fail" (what the judge is there to find)."""

    route: str
    models: str
    labelled: int
    parsed: int
    true_positive_rate: float  # failures the judge called failures
    true_negative_rate: float  # passes the judge called passes
    kappa: float
    floor: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.labelled if self.labelled else 0.0

    @property
    def gating(self) -> bool:
        return self.kappa >= self.floor

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(parse_rate=self.parse_rate, gating=self.gating)
        return d


def agreement(labels: list[str], verdicts: list[str | None]) -> tuple[float, float, float]:
    """True-positive rate, true-negative rate and Cohen's kappa of verdicts against labels. A
    verdict the judge could not give counts as a disagreement: an unparseable judge is not a
    judge that agrees."""
    pairs = list(zip(labels, verdicts))
    pos = [v for lab, v in pairs if lab == FAIL]
    neg = [v for lab, v in pairs if lab == PASS]
    tpr = sum(v == FAIL for v in pos) / len(pos) if pos else 0.0
    tnr = sum(v == PASS for v in neg) / len(neg) if neg else 0.0
    n = len(pairs)
    if n == 0:
        return tpr, tnr, 0.0
    observed = sum(lab == v for lab, v in pairs) / n
    judged_fail = sum(v == FAIL for _, v in pairs) / n
    judged_pass = sum(v == PASS for _, v in pairs) / n
    label_fail = len(pos) / n
    expected = label_fail * judged_fail + (1 - label_fail) * judged_pass
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 0.0
    return tpr, tnr, kappa
