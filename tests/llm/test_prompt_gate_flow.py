"""The prompt-eval flow on a real Prefect server: server-side LLM limits, the usage/cost artifact,
the gate failing the run, and an API key from a Prefect Secret block that never shows in the
run's logs or artifacts. The model is an OpenAI-compatible recording fake on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
import yaml
from prefect.client.orchestration import get_client

from spotline.llm.prompts import PromptLibrary
from spotline.settings import PROJECT_ROOT
from tests.conftest import use_settings
from tests.llm.fake_servers import Recorder, chat_reply
from tests.http_boundary import loopback_server, no_proxies
from tests.llm.test_prompts import _good_answer

pytestmark = pytest.mark.usefixtures("prefect_api")

KEY = "sk-block-5e6f7a8b9c0d-from-a-prefect-secret"


async def _run_record(flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        limits = await client.read_global_concurrency_limits(limit=50)
    return arts, logs, limits


@pytest.fixture
def eval_setup(monkeypatch, tmp_path):
    from prefect.blocks.system import Secret

    no_proxies(monkeypatch)
    Secret(value=KEY).save("spotline-test-llm-key", overwrite=True)
    prompts = tmp_path / "prompts"
    shutil.copytree(PROJECT_ROOT / "prompts", prompts)
    seen = []

    def script(n, body, headers):
        seen.append(headers.get("Authorization"))
        return chat_reply(_good_answer(body))

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        use_settings(monkeypatch, tmp_path, SPOTLINE_LLM__PROMPTS_DIR=str(prompts),
                     SPOTLINE_LLM__MODELS=json.dumps({"fake": {"provider": "openai", "model_id": "gpt-4.1-mini",
                                                                "base_url": url}}),
                     SPOTLINE_LLM__ROUTES=json.dumps({"default": ["fake"]}),
                     SPOTLINE_LLM__OPENAI_API_KEY="prefect:spotline-test-llm-key",
                     SPOTLINE_LLM__CONCURRENCY=json.dumps({"openai": 5, "local": 1, "bedrock": 16}),
                     SPOTLINE_LLM__RATE_PER_MINUTE=json.dumps({"openai": 6000}))
        yield prompts, seen


def _baselines(prompts, validity):
    lib = PromptLibrary(prompts)
    (prompts / "baselines.json").write_text(json.dumps({
        n: {"version": lib.get(n).version, "source_hash": lib.get(n).source_hash, "models": "gpt-4.1-mini",
            "cases": 5, "schema_validity": validity, "check_pass_rate": validity} for n in lib.names()}))


def test_prompt_eval_flow_publishes_usage_uses_server_limits_and_hides_the_key(eval_setup):
    from flows.prompt_eval import prompt_eval

    prompts, seen = eval_setup
    _baselines(prompts, 1.0)
    state = prompt_eval(return_state=True)
    assert state.is_completed(), state.message
    assert seen and all(h == f"Bearer {KEY}" for h in seen)  # the key came from the Prefect Secret block
    arts, logs, limits = asyncio.run(_run_record(state.state_details.flow_run_id))
    by_key = {a.key: a for a in arts if a.key}
    report = {r["item"]: r for r in json.loads(by_key["prompt-eval-run-report"].data)}
    llm = report["LLM gpt-4.1-mini (openai)"]
    calls = len(seen)  # one per golden case of every shipped prompt; the fake reports 50 in / 20 out each
    assert calls == sum(len(yaml.safe_load(f.read_text())["cases"]) for f in (prompts / "golden").glob("*.yaml"))
    assert llm["quantity"] == f"{calls} calls, {50 * calls} in / {20 * calls} out tokens, errors: none"
    assert llm["usd"] == f"${(50 * calls * 0.4 + 20 * calls * 1.6) / 1e6:.6f}"
    assert report["LLM response cache"]["quantity"] == "0 hits"
    assert "Fargate Spot" in report["compute (this attempt)"]["quantity"]
    assert report["interruptions survived"]["quantity"] == 0
    gate = json.loads(by_key["prompt-gate"].data)
    assert {r["prompt"]: r["gate"] for r in gate} == {n: "pass" for n in PromptLibrary(prompts).names()}
    cases = json.loads(by_key["prompt-eval-persona-card"].data)
    assert len(cases) == 5 and all(c["valid"] for c in cases)
    named = {lim.name: lim for lim in limits}
    assert named["spotline-llm-openai"].limit == 5
    assert named["spotline-llm-openai-rate"].slot_decay_per_second == pytest.approx(100.0)
    everything = json.dumps([a.model_dump(mode="json") for a in arts]) + "\n".join(log.message for log in logs)
    assert KEY not in everything
    assert any("share the server's limits" in log.message for log in logs)


def test_prompt_below_its_baseline_fails_the_run_with_the_reason(eval_setup):
    from flows.prompt_eval import PromptGateFailed, prompt_eval

    prompts, _ = eval_setup
    _baselines(prompts, 1.0)
    path = prompts / "persona_card.yaml"
    path.write_text(path.read_text().replace("version: 1", "version: 2"))  # an edit, properly bumped...
    base = json.loads((prompts / "baselines.json").read_text())
    base["persona_card"]["source_hash"] = PromptLibrary(prompts).get("persona_card").source_hash
    base["persona_card"]["version"] = "1"
    base["answer_grade"]["check_pass_rate"] = 1.01  # ...but this one can no longer reach its baseline
    (prompts / "baselines.json").write_text(json.dumps(base))
    state = prompt_eval(return_state=True)
    assert state.is_failed()
    with pytest.raises(PromptGateFailed, match="answer_grade: check_pass_rate fell"):
        state.result()
    arts, _, _ = asyncio.run(_run_record(state.state_details.flow_run_id))
    gate = {r["prompt"]: r["gate"] for r in json.loads(next(a for a in arts if a.key == "prompt-gate").data)}
    assert gate["persona_card"] == "pass" and gate["answer_grade"].startswith("FAIL")
    assert any(a.key == "prompt-eval-run-report" for a in arts)  # a failed run still reports its cost
