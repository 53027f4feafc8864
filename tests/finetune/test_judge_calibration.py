"""The head-to-head judge gates a promotion only once it is measured fit to (spotline/finetune/judge_calibration.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spotline.finetune import judge_calibration as jc
from tests.conftest import ROOT

PAIRS = ROOT / "data" / "feedback" / "judge_pairs.jsonl"


def _judged(pairs, judge):
    """Winners a rule-following judge names, for the labels calls() asks."""
    requests, labels = jc.calls("judge", pairs)
    return labels, [judge(r["variables"], label) for r, label in zip(requests, labels)]


def test_the_shipped_pairs_have_a_better_answer_that_states_the_reference_and_a_worse_one_that_does_not():
    pairs = jc.load_pairs(PAIRS)
    assert len(pairs) >= 45 and len({p.id for p in pairs}) == len(pairs)
    assert {p.kind for p in pairs} == {"near-miss", "wrong-fact", "non-answer"}
    for p in pairs:
        assert p.better.rstrip(".") in p.reference, p.id  # the reference's fact, without the house style
        assert p.worse != p.better and p.better.rstrip(".") not in p.worse, p.id


def test_both_orders_make_the_labels_half_a_half_b_so_a_judge_that_always_says_a_scores_zero():
    pairs = jc.load_pairs(PAIRS)
    labels, always_a = _judged(pairs, lambda v, label: "A")
    assert labels.count("A") == labels.count("B") == len(pairs)
    cal = jc.score("judge", "gemma", pairs, labels, always_a, floor=0.4)
    assert cal.kappa == pytest.approx(0.0) and not cal.gating and cal.route == "judge-pairwise"
    assert jc.by_kind(cal) == {"near-miss": 0.5, "non-answer": 0.5, "wrong-fact": 0.5}


def test_a_judge_that_reads_the_reference_gates_and_ties_or_errors_count_against_it():
    pairs = jc.load_pairs(PAIRS)

    def words(text):
        return set(re.findall(r"[a-z0-9]+", text.lower()))

    def overlap(v):  # the answer sharing more words with the reference wins
        ref = words(v["reference"])
        a, b = len(words(v["answer_a"]) & ref), len(words(v["answer_b"]) & ref)
        return "A" if a > b else "B" if b > a else "tie"

    labels, winners = _judged(pairs, lambda v, label: overlap(v))
    good = jc.score("judge", "rule", pairs, labels, winners, floor=0.4)
    assert good.gating and good.kappa > 0.8
    rng = np.random.default_rng(0)
    spoiled = [w if rng.random() < 0.6 else rng.choice(["tie", None]) for w in winners]
    worse = jc.score("judge", "rule", pairs, labels, spoiled, floor=0.4)
    assert worse.kappa < good.kappa and worse.parse_rate < 1.0


def test_the_gate_reads_the_recorded_calibration_for_the_models_it_runs(tmp_path):
    from spotline.storage.local import LocalObjectStore
    from spotline.swarm import judge as jd

    store, prefix = LocalObjectStore(tmp_path), "_spotline/judge-calibration/"
    pairs = jc.load_pairs(PAIRS)
    never = jd.gating(store, prefix, "judge" + jc.SUFFIX, "claude", 0.4, command="spotline finetune calibrate-judge")
    assert never[0] is False and "spotline finetune calibrate-judge" in never[1]
    labels, right = _judged(pairs, lambda v, label: label)
    jd.save(store, prefix, jc.score("judge", "claude", pairs, labels, right, floor=0.4))
    assert jd.gating(store, prefix, "judge" + jc.SUFFIX, "claude", 0.4)[0] is True
    assert jd.gating(store, prefix, "judge" + jc.SUFFIX, "gemma", 0.4)[0] is False  # measured on other models
    assert jd.gating(store, prefix, "judge", "claude", 0.4)[0] is False  # the swarm's record is another one


@pytest.mark.slow
def test_the_local_270m_judge_is_measured_recorded_and_stays_advisory(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    from spotline.swarm import judge as jd
    from tests.conftest import use_settings

    res = use_settings(monkeypatch, tmp_path)
    result = CliRunner().invoke(app, ["finetune", "calibrate-judge", "--limit", "6"])
    assert result.exit_code == 0, result.output
    rec = jd.recorded(res.store, res.settings.layout.judge_calibrations, "judge" + jc.SUFFIX)
    assert rec["labelled"] == 12 and rec["models"] == "gemma-3-270m-q4_k_m"
    assert rec["kappa"] < res.settings.finetune.judge_floor_kappa, "a 270M base model is no judge"
    gating, why = jd.gating(res.store, res.settings.layout.judge_calibrations, "judge" + jc.SUFFIX,
                            rec["models"], res.settings.finetune.judge_floor_kappa)
    assert not gating and "below the 0.40 floor" in why
    assert "agreement by kind" in result.output and "advisory" in result.output
