"""The fine-tuning loop end to end on a real Prefect server, with a tiny Gemma 3 as the base.

The tiny model (2 layers, byte tokens, random weights) runs the same code path as Gemma 3 270M:
intake from the local spool, the training set, LoRA training with checkpoints, the GGUF LoRA
export, the registry, evaluation, the gate, promotion, the gateway resolving `champion`, rollback.
The gate's quality floors are relaxed for it (a random model's answers are noise to the embedding
model); the real model's run (README "Fine-tuning") keeps them. Judge: off (no tiny judge exists).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import ROOT, use_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(900)]
SAMPLE = ROOT / "data" / "feedback" / "sample_events.jsonl"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Gemma 3 as a transformers folder (what training loads) and as a GGUF (what llama.cpp serves)."""
    from spotline.finetune.base_model import tiny_config_model
    from spotline.finetune.gguf_lora import write_f32_gguf

    tmp = tmp_path_factory.mktemp("tiny-base")
    model, tokenizer = tiny_config_model(seed=3)
    model.save_pretrained(tmp / "hf")
    tokenizer.save_pretrained(tmp / "hf")
    write_f32_gguf(model, tokenizer, tmp / "tiny.gguf")
    return tmp / "hf", tmp / "tiny.gguf"


def _settings(monkeypatch, tmp: Path, tiny_base, **extra: str):
    folder, gguf = tiny_base
    tiny = {"provider": "local", "model_id": "tiny-gemma3", "family": "gemma3", "gguf": str(gguf), "context_tokens": 512}
    models = {"tiny": tiny, "tiny-champion": {**tiny, "registry_alias": "champion"}}
    env = dict(
        SPOTLINE_HOME=str(tmp / "home"), FT_TEST_KEY="0123456789abcdef0123456789abcdef",
        SPOTLINE_PERSONAS__PSEUDONYM_KEY="env:FT_TEST_KEY", SPOTLINE_LLM__MODELS=json.dumps(models),
        SPOTLINE_LLM__ROUTES=json.dumps({"default": ["tiny"], "judge": ["tiny"], "served": ["tiny-champion"]}),
        SPOTLINE_FINETUNE__BASE_MODEL="tiny", SPOTLINE_FINETUNE__BASE_FOLDER=str(folder),
        SPOTLINE_FINETUNE__JUDGE_USE="none", SPOTLINE_FINETUNE__LEARNING_RATE="0.003", SPOTLINE_FINETUNE__EPOCHS="2",
        SPOTLINE_FINETUNE__MAX_TOKENS="96", SPOTLINE_FINETUNE__EVAL_MAX_NEW_TOKENS="16",
        SPOTLINE_FINETUNE__FORMAT_FLOOR="0", SPOTLINE_FINETUNE__MAX_FORMAT_DROP="1",
        SPOTLINE_FINETUNE__MAX_SIMILARITY_DROP="1")
    return use_settings(monkeypatch, tmp, **{**env, **extra})


def _events_named(name: str, since: datetime, wait_s: float = 20.0) -> list[dict]:
    """Events the server stored (emit_event sends in the background: give it a moment)."""
    import time

    from prefect.client.orchestration import get_client

    from runtime.events import read_events

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            found = list(read_events(client, {"event": {"name": [name]}}, since))
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_corrections_train_a_candidate_that_is_promoted_served_by_the_gateway_and_rolled_back(monkeypatch, tmp_path,
                                                                                               tiny_base):
    from cli.main import feedback_send
    from flows.feedback import feedback_intake
    from flows.finetune import finetune
    from spotline.finetune.registry import Registry

    res = _settings(monkeypatch, tmp_path, tiny_base)
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    feedback_send(SAMPLE)
    intake = feedback_intake()
    assert intake["stored"] == 143 and intake["duplicates"] == 1 and intake["dead_lettered"] == 2
    assert intake["triggered"] and intake["new_corrections"] == 133
    assert _events_named("spotline.feedback.threshold_reached", started), "the fine-tune trigger was not emitted"

    out = finetune(reason="test")
    assert out["status"] == "promoted", out["reason"]
    reg = Registry(res.store, res.settings.layout.models)
    champion = reg.resolve("champion")
    assert champion.version == out["candidate"] and champion.parent == "base"
    assert {"adapter.safetensors", "adapter.gguf", "adapter_config.json"} <= set(champion.files)
    assert champion.dataset["content_hash"] and champion.training["steps"] == out["steps"] > 0
    evaluation = reg.evaluation(champion.version)
    assert evaluation["promote"] and evaluation["candidate"]["holdout_loss"] < evaluation["champion"]["holdout_loss"]
    assert _events_named("spotline.model.promoted", started)

    # The gateway serves the alias: the base GGUF plus the champion's GGUF LoRA, fetched and checked.
    spec = res.gateway._resolve_alias(res.settings.llm.models["tiny-champion"])
    assert spec.lora is not None and Path(spec.lora).is_file() and spec.model_id.endswith("+" + champion.version)
    answer = res.gateway.call("served", text="Question: how do I reset my password?\nAnswer:", max_tokens=8)
    assert answer.usage.model.endswith(champion.version)

    # The next intake has nothing new: the training set recorded how far it got.
    assert feedback_intake()["new_corrections"] == 0

    # Rollback: one command, the previous champion is back, and the history says who and why.
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["model", "rollback", "--reason", "answers sound wrong in staging"])
    assert result.exit_code == 0, result.output
    doc = reg.aliases()
    assert doc.aliases["champion"] == "base"
    assert (doc.history[-1].action, doc.history[-1].from_version, doc.history[-1].reason) == (
        "rollback", champion.version, "answers sound wrong in staging")
    res.gateway._aliases.clear()  # what registry_ttl_s does by itself after 30 s
    assert res.gateway._resolve_alias(res.settings.llm.models["tiny-champion"]).lora is None


def test_a_worse_candidate_is_refused_and_the_champion_stays(monkeypatch, tmp_path, tiny_base):
    """After a good fine-tune, poisoned feedback arrives (every correction replaced by the same junk,
    for the same prompts). The candidate trained on it looks better on its own holdout, which is
    poisoned too, and worse on the curated golden set: the gate refuses it, records why, and the
    champion stays."""
    from cli.main import feedback_send
    from flows.feedback import feedback_intake
    from flows.finetune import finetune
    from spotline.finetune.registry import Registry

    res = _settings(monkeypatch, tmp_path, tiny_base)
    feedback_send(SAMPLE)
    feedback_intake()
    good = finetune(reason="good feedback")
    assert good["status"] == "promoted", good["reason"]

    poisoned = tmp_path / "poisoned.jsonl"
    lines = []
    for line in SAMPLE.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("correction"):
            event.update(id=event["id"] + "-later", ts="2026-12-01T09:00:00Z", correction="zq" * 30)
            lines.append(json.dumps(event))
    poisoned.write_text("\n".join(lines) + "\n")
    feedback_send(poisoned)
    assert feedback_intake()["triggered"]
    out = finetune(reason="poisoned feedback")
    assert out["status"] == "kept" and "golden-set loss" in out["reason"], out["metrics"]
    assert out["metrics"]["candidate"]["holdout_loss"] < out["metrics"]["champion"]["holdout_loss"]  # it looked better
    reg = Registry(res.store, res.settings.layout.models)
    assert reg.aliases().aliases == {"champion": good["candidate"], "candidate": out["candidate"]}
    assert reg.evaluation(out["candidate"])["promote"] is False
    assert reg.get(out["candidate"]).parent == good["candidate"]  # trained on from the champion
    assert [m.action for m in reg.aliases().history if m.alias == "champion"] == ["set", "promote"]
