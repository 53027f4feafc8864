"""Prompts as code: loading, rendering, hashing, golden checks and the gate command."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from spotline.llm.golden import Check, EvalReport, gate
from spotline.llm.prompts import PromptLibrary, PromptSpec
from spotline.settings import PROJECT_ROOT
from tests.conftest import use_settings
from tests.llm.fake_servers import Recorder, chat_reply
from tests.http_boundary import loopback_server, no_proxies

PROMPTS = PROJECT_ROOT / "prompts"


def test_shipped_prompts_load_with_golden_sets_and_baselines():
    lib = PromptLibrary(PROMPTS)
    baselines = json.loads((PROMPTS / "baselines.json").read_text())
    assert set(lib.names()) >= {"persona_card", "answer_grade"}
    for name in lib.names():
        spec = lib.get(name)
        assert spec.examples, f"{name} has no examples"  # free text (staging_answer) or schema-bound: both ship examples
        assert (PROMPTS / "golden" / f"{name}.yaml").is_file()
        assert baselines[name]["version"] == spec.version
        assert baselines[name]["source_hash"] == spec.source_hash, f"{name} changed since its baseline"


def test_rendering_for_chat_and_base_models():
    spec = PromptLibrary(PROMPTS).get("persona_card")
    r = spec.render({"plan": "pro", "area": "billing", "mood": "frustrated"})
    assert r.text.count("### Input") == len(spec.examples) + 1
    assert r.text.endswith("plan: pro\narea: billing\nmood: frustrated\n### Output\n")
    assert r.messages[-1].content == "plan: pro\narea: billing\nmood: frustrated"
    with pytest.raises(ValueError, match="'mood' is undefined"):
        spec.render({"plan": "pro", "area": "billing"})


def test_a_prompt_whose_example_breaks_its_schema_does_not_load(tmp_path):
    with pytest.raises(ValueError, match="violates its own schema"):
        PromptSpec(name="x", version="1", template="{{ q }}",
                   output_schema={"type": "object", "required": ["a"]}, examples=[{"input": {"q": 1}, "output": {}}])
    (tmp_path / "wrong.yaml").write_text("name: other\nversion: 1\ntemplate: hi\n")
    with pytest.raises(ValueError, match="must match the file name"):
        PromptLibrary(tmp_path).names()


@pytest.mark.parametrize("check, output, ok", [
    ({"path": "tone", "equals": "calm"}, {"tone": "calm"}, True),
    ({"path": "tone", "equals": "calm"}, {"tone": "angry"}, False),
    ({"path": "tone", "equals": "calm"}, {}, False),
    ({"path": "msg", "not_matches": r"\S+@\S+"}, {"msg": "mail me at a@b.co"}, False),
    ({"path": "msg", "min_length": 5}, {"msg": "hey"}, False),
    ({"path": "leak", "equals": False}, {"leak": False}, True),
    ({"path": "a.b", "one_of": [1, 2]}, {"a": {"b": 2}}, True),
    ({"path": "n", "not_equals": "Lena"}, {"n": "Lena"}, False),
])
def test_golden_checks(check, output, ok):
    assert (Check(**check).run(output) is None) is ok


def test_gate_compares_with_the_baseline_and_demands_a_version_bump():
    report = EvalReport("p", "2", "hash-b", "default", "m", cases=10, valid=9, checks=20, checks_passed=18)
    base = {"version": "1", "source_hash": "hash-a", "schema_validity": 0.9, "check_pass_rate": 0.9}
    assert gate(report, base) == []
    assert "fell to" in gate(report, {**base, "schema_validity": 1.0})[0]
    assert "bump it" in gate(report, {**base, "version": "2"})[0]
    assert "no recorded baseline" in gate(report, None)[0]
    assert "measured on other-model" in gate(report, {**base, "models": "other-model"})[0]


def _good_answer(body: dict) -> str:
    """What a good model would answer to each shipped prompt's golden cases."""
    user = body["messages"][-1]["content"]
    if user.startswith("build tag:"):  # staging_answer: free text from the reference
        return "Open the invoice and click Resend; the customer gets a new link."
    if user.startswith("kind:"):  # swarm_judge
        bad = any(w in user for w in ("refunds every expense", "pwned", "weather"))
        return json.dumps({"verdict": "fail" if bad else "pass", "score": 1 if bad else 5,
                           "reason": "graded by the fake"})
    if user.startswith("question:"):  # finetune_judge: the answer sharing more words with the reference
        lines = dict(line.split(": ", 1) for line in user.splitlines() if ": " in line)
        ref = set(lines["reference"].lower().split())
        a, b = (len(ref & set(lines[k].lower().split())) - 2 * ("refunds" in lines[k]) for k in ("answer A", "answer B"))
        return json.dumps({"winner": "A" if a > b else "B" if b > a else "tie", "reason": "graded by the fake"})
    if user.startswith("plan:"):
        mood = re.search(r"mood: (\w+)", user).group(1)
        return json.dumps({"name": "Quinn", "role": "office manager", "goal": "get help with the app quickly",
                           "tone": mood, "first_message": "Hello, I need some help with my account today."})
    leak = bool(re.search(r"@|\d{4} \d{4}", user))
    halluc = "refund" in user or "forever" in user
    return json.dumps({"leak": leak, "hallucination": halluc, "verdict": "fail" if leak or halluc else "pass",
                       "reason": "graded by the fake"})


def test_gate_command_records_a_baseline_and_fails_a_regression(monkeypatch, tmp_path):
    """`spotline prompts eval` end to end: record, pass, then fail on worse output and on an unbumped edit."""
    from cli.main import app

    no_proxies(monkeypatch)
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts)
    (prompts / "baselines.json").unlink(missing_ok=True)
    mode = {"broken": False}

    def script(n, body, headers):
        if mode["broken"] and n % 2:
            return chat_reply("I think the answer is probably fine.")
        return chat_reply(_good_answer(body))

    rec = Recorder(script)
    runner = CliRunner()
    with loopback_server(rec.handler()) as url:
        use_settings(monkeypatch, tmp_path, SPOTLINE_LLM__PROMPTS_DIR=str(prompts),
                     SPOTLINE_LLM__MODELS=json.dumps({"fake": {"provider": "openai", "model_id": "fake-judge",
                                                                "base_url": url}}),
                     SPOTLINE_LLM__ROUTES=json.dumps({"default": ["fake"]}),
                     SPOTLINE_LLM__OPENAI_API_KEY="env:SPOTLINE_FAKE_KEY", SPOTLINE_FAKE_KEY="fake-key-0000",
                     SPOTLINE_LLM__REPAIR_ATTEMPTS="0", SPOTLINE_LLM__MAX_ATTEMPTS="1")
        first = runner.invoke(app, ["prompts", "eval", "--record"])
        assert first.exit_code == 0, first.output
        recorded = json.loads((prompts / "baselines.json").read_text())
        assert recorded["answer_grade"]["schema_validity"] == 1.0 and recorded["answer_grade"]["check_pass_rate"] == 1.0

        again = runner.invoke(app, ["prompts", "eval"])
        assert again.exit_code == 0, again.output
        sent = len(rec.requests)
        cases = sum(len(yaml.safe_load(f.read_text())["cases"]) for f in (prompts / "golden").glob("*.yaml"))
        assert sent == 2 * cases  # the gate never answers from the cache: every case asked twice

        mode["broken"] = True
        worse = runner.invoke(app, ["prompts", "eval", "answer_grade"])
        assert worse.exit_code == 1
        assert "schema_validity fell" in worse.output and "INVALID" in worse.output

        mode["broken"] = False
        path = prompts / "answer_grade.yaml"
        path.write_text(path.read_text().replace("Grade the support answer.", "Grade the answer strictly."))
        from spotline.resources import get_resources

        get_resources().gateway.prompts._prompts = None  # a new process would re-read the folder
        edited = runner.invoke(app, ["prompts", "eval", "answer_grade"])
        assert edited.exit_code == 1 and "bump it" in edited.output
