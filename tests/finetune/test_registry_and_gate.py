"""The model registry and the promotion gate, on a real local object store; no model needed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from spotline.finetune import evaluate as ev
from spotline.finetune import pairs as pr
from spotline.finetune.registry import ModelVersion, Registry, RegistryError
from spotline.storage.local import LocalObjectStore


@pytest.fixture
def reg(tmp_path) -> Registry:
    return Registry(LocalObjectStore(tmp_path / "store"), "_spotline/models/")


def _version(reg: Registry, name: str, tmp: Path, parent: str | None = "base") -> ModelVersion:
    f = tmp / f"{name}.gguf"
    f.write_bytes(f"weights of {name}".encode())
    return reg.register(ModelVersion(version=name, base="gemma", parent=parent), {"adapter.gguf": f})


def test_a_version_is_immutable_and_its_files_are_checked_against_the_manifest(reg, tmp_path):
    v = _version(reg, "ft-1", tmp_path)
    with pytest.raises(RegistryError, match="immutable"):
        _version(reg, "ft-1", tmp_path)
    got = reg.fetch(reg.get("ft-1"), "adapter.gguf", tmp_path / "dl" / "a.gguf")
    assert got.read_bytes() == b"weights of ft-1"
    reg.store.put(v.files["adapter.gguf"]["key"], b"weights of ft-X")  # tampered after registration
    with pytest.raises(RegistryError, match="does not match"):
        reg.fetch(reg.get("ft-1"), "adapter.gguf", tmp_path / "dl2" / "a.gguf")


def test_promotion_moves_the_alias_and_appends_to_its_history(reg, tmp_path):
    reg.ensure_base("gemma")
    _version(reg, "ft-1", tmp_path)
    reg.move("champion", "ft-1", "beat base on the holdout", actor="test")
    doc = reg.aliases()
    assert doc.aliases["champion"] == "ft-1"
    assert [(m.action, m.from_version, m.to_version) for m in doc.history] == [("set", None, "base"),
                                                                                ("promote", "base", "ft-1")]
    assert doc.history[-1].reason == "beat base on the holdout" and doc.history[-1].at


def test_rollback_restores_the_previous_champion_records_it_and_a_second_rollback_goes_further_back(reg, tmp_path):
    reg.ensure_base("gemma")
    for n in (1, 2):
        _version(reg, f"ft-{n}", tmp_path)
        reg.move("champion", f"ft-{n}", f"promote {n}")
    move = reg.rollback("champion", "ft-2 answers in the wrong language")
    assert (move.from_version, move.to_version, move.action) == ("ft-2", "ft-1", "rollback")
    assert reg.aliases().aliases["champion"] == "ft-1"
    reg.rollback("champion", "ft-1 too")  # a stack, not a toggle: back to base, not forward to ft-2
    assert reg.aliases().aliases["champion"] == "base"
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("champion", "nothing left")
    history = reg.aliases().history
    assert len(history) == 5 and [m.action for m in history[-2:]] == ["rollback", "rollback"]


def test_an_alias_can_only_point_at_a_registered_version(reg):
    reg.ensure_base("gemma")
    with pytest.raises(RegistryError, match="no model version"):
        reg.move("champion", "ft-never-registered", "typo")
    with pytest.raises(RegistryError, match="unknown alias"):
        reg.move("production", "base", "not an alias")


def test_concurrent_promotions_lose_no_move_and_no_history_entry(reg, tmp_path):
    reg.ensure_base("gemma")
    for n in range(8):
        _version(reg, f"ft-{n}", tmp_path)
    barrier = threading.Barrier(8)

    def promote(n: int) -> None:
        barrier.wait()
        reg.move("candidate", f"ft-{n}", f"writer {n}")

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    moves = [m for m in reg.aliases().history if m.alias == "candidate"]
    assert sorted(m.to_version for m in moves) == [f"ft-{n}" for n in range(8)]
    # each move names the version it replaced: together they form one chain, no update was lost
    assert [m.from_version for m in moves[1:]] == [m.to_version for m in moves[:-1]]


def _scores(name: str, loss: float, sim: float = 0.5, gsim: float = 0.5, fmt: float = 1.0,
            gloss: float = 2.0) -> ev.Scores:
    return ev.Scores(name, loss, gloss, sim, gsim, fmt)


def test_the_gate_promotes_only_a_candidate_better_by_both_margins():
    cfg = ev.GateConfig(min_loss_gain_abs=0.05, min_loss_gain_rel=0.02)
    assert ev.decide(_scores("c", 2.0), _scores("n", 1.5), None, cfg, 10).promote
    small = ev.decide(_scores("c", 2.0), _scores("n", 1.97), None, cfg, 10)  # 0.03 < 0.05 absolute
    assert not small.promote and "absolute margin" in small.reason
    rel = ev.decide(_scores("c", 10.0), _scores("n", 9.9), None, cfg, 10)  # 0.1 absolute but only 1% relative
    assert not rel.promote and "relative margin" in rel.reason and "absolute" not in rel.reason


def test_the_gate_refuses_a_worse_model_and_a_lower_loss_that_breaks_a_floor():
    cfg = ev.GateConfig()
    worse = ev.decide(_scores("c", 2.0), _scores("n", 2.4), None, cfg, 10)
    assert not worse.promote and worse.reason.startswith("kept the champion")
    broken = ev.decide(_scores("c", 2.0, fmt=1.0), _scores("n", 1.0, fmt=0.5), None, cfg, 10)
    assert not broken.promote and "format validity" in broken.reason
    drifted = ev.decide(_scores("c", 2.0, gsim=0.7), _scores("n", 1.0, gsim=0.4), None, cfg, 10)
    assert not drifted.promote and "golden" in drifted.reason
    poisoned = ev.decide(_scores("c", 2.0, gloss=2.0), _scores("n", 1.0, gloss=2.3), None, cfg, 10)
    assert not poisoned.promote and "golden-set loss" in poisoned.reason


def test_an_advisory_judge_is_shown_but_does_not_decide_and_a_gating_judge_does():
    cfg = ev.GateConfig()
    losing = ev.HeadToHead(candidate_wins=1.0, comparisons=10, errors=0, gating=False, why="advisory")
    d = ev.decide(_scores("c", 2.0), _scores("n", 1.0), losing, cfg, 10)
    assert d.promote and any(c["check"] == "judge head-to-head" and not c["ok"] and not c["gating"] for c in d.checks)
    gating = ev.HeadToHead(candidate_wins=1.0, comparisons=10, errors=0, gating=True, why="calibrated")
    assert not ev.decide(_scores("c", 2.0), _scores("n", 1.0), gating, cfg, 10).promote


def test_head_to_head_asks_both_orders_and_a_judge_that_always_says_a_scores_a_tie():
    class AlwaysA:
        def map(self, calls):
            class R:
                data = {"winner": "A", "reason": "first"}
            return [R() for _ in calls]

    h = ev.head_to_head(AlwaysA(), "judge", [("q", "ref", "champ", "cand")] * 4, gating=False, why="")
    assert h.comparisons == 4 and h.win_rate == 0.5  # position bias cancels to ties


def test_format_validity_catches_empty_run_on_and_looping_answers():
    assert ev.format_valid("Short answer: open Settings. - Larkspur Support")
    assert not ev.format_valid("   ")
    assert not ev.format_valid("Open settings.\nQuestion: and how do I")
    assert not ev.format_valid("click the button click the button click the button click the button")


def test_the_holdout_is_stable_by_prompt_and_never_overlaps_training():
    import pandas as pd

    rows = [{"id": f"e{i}", "ts": pd.Timestamp("2026-12-01", tz="UTC") + pd.Timedelta(minutes=i), "kind": "correction",
             "prompt": f"question number {i % 30}?", "correction": f"answer {i}", "response": ""} for i in range(90)]
    rows += [{"id": "c1", "ts": pd.Timestamp("2026-12-02", tz="UTC"), "kind": "complaint", "prompt": "why?",
              "correction": None, "response": "because"}]
    ps = pr.build(pd.DataFrame(rows), holdout_share=0.3)
    assert set(ps.train["prompt"]).isdisjoint(ps.holdout["prompt"])
    assert len(ps.train) + len(ps.holdout) == 30 and ps.dropped == {"superseded": 60}
    assert len(ps.complaints) == 1 and "why?" not in set(ps.train["prompt"]) | set(ps.holdout["prompt"])
    latest = dict(zip(ps.train["prompt"], ps.train["completion"])) | dict(zip(ps.holdout["prompt"], ps.holdout["completion"]))
    assert latest["question number 0?"] == "answer 60"  # the latest correction wins
    more = pr.build(pd.DataFrame(rows + [{**rows[0], "id": "new", "prompt": "a brand new question?",
                                          "ts": pd.Timestamp("2026-12-03", tz="UTC")}]), holdout_share=0.3)
    assert set(ps.holdout["prompt"]) <= set(more.holdout["prompt"])  # more data never moves a prompt across
    assert more.content_hash != ps.content_hash and pr.build(pd.DataFrame(rows), 0.3).content_hash == ps.content_hash


def test_a_candidate_continues_from_the_champion_only_when_the_lora_shape_is_unchanged():
    from spotline.finetune import run as fr
    from spotline.finetune.trainer import TrainConfig

    cfg = TrainConfig(lora_r=8, target_modules=("q_proj", "v_proj"))
    files = {"adapter.safetensors": {"key": "k", "sha256": "0", "bytes": 1}}
    same = ModelVersion(version="ft-1", base="gemma", files=files,
                        training={"config": {"lora_r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}})
    other = ModelVersion(version="ft-2", base="gemma", files=files,
                         training={"config": {"lora_r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}})
    assert fr.continues_from(same, cfg) and not fr.continues_from(other, cfg)
    assert fr.champion_config(other, cfg).lora_r == 4  # the champion is evaluated in its own shape
    assert not fr.continues_from(ModelVersion(version="base", base="gemma"), cfg)
