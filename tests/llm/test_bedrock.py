"""Bedrock Converse through the real boto3 client, pointed (endpoint_url) at a recording fake of
the Converse wire format on loopback: Bedrock itself cannot be reached from here."""

from __future__ import annotations

import time

import pytest

from spotline.llm.gateway import Gateway
from spotline.llm.types import LLMCallFailed
from spotline.settings import LLMSettings, ModelSpec, Settings, StoreSettings
from spotline.storage import make_store
from tests.llm.fake_servers import Recorder, aws_error, converse_reply
from tests.http_boundary import fake_aws_credentials, loopback_server, no_proxies

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
VERDICT = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["pass", "fail"]}}}


@pytest.fixture(autouse=True)
def _aws(monkeypatch):
    no_proxies(monkeypatch)
    fake_aws_credentials(monkeypatch, "AKIAFAKEFAKEFAKE", "fake-secret-access-key-for-tests")


def gateway(tmp_path, url: str, **llm) -> Gateway:
    cfg = dict(
        models={"haiku": ModelSpec(provider="bedrock", model_id=HAIKU),
                "sonnet": ModelSpec(provider="bedrock", model_id=SONNET)},
        routes={"default": ["haiku", "sonnet"]}, bedrock_endpoint_url=url, backoff_base_s=0.01, timeout_s=5,
    )
    cfg.update(llm)
    s = Settings(store=StoreSettings(kind="local", root=tmp_path / "store"), llm=LLMSettings(**cfg))
    return Gateway(s, make_store(s.store), sleep=lambda d: time.sleep(min(d, 0.05)))


def test_json_output_via_forced_tool_use(tmp_path):
    rec = Recorder(lambda n, b, h: converse_reply(tool_input={"verdict": "fail"}, input_tokens=1200, output_tokens=30))
    with loopback_server(rec.handler()) as url:
        result = gateway(tmp_path, url).call(prompt="answer_grade", variables={"reference": "r", "answer": "a"},
                                             schema=VERDICT)
    assert result.data == {"verdict": "fail"}
    assert result.usage.cost_usd == pytest.approx((1200 * 1.0 + 30 * 5.0) / 1e6)
    req = rec.requests[0]
    assert req["path"].startswith("/model/") and req["path"].endswith("/converse")
    assert HAIKU.replace(":", "%3A") in req["path"] or HAIKU in req["path"]
    body = req["body"]
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "emit_output"}}
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"] == VERDICT
    assert body["system"][0]["text"].startswith("Grade the support answer")
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 3 + ["user"]
    assert "AWS4-HMAC-SHA256" in req["headers"]["Authorization"]  # the real client signed it


def test_throttling_exception_is_retried(tmp_path):
    def script(n, body, headers):
        if n == 0:
            return aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        return converse_reply(text="All good.")

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        result = gateway(tmp_path, url).call(text="hi")
    assert result.text == "All good." and result.usage.attempts == 2 and result.usage.model == HAIKU


def test_validation_error_is_not_retried_and_falls_back(tmp_path):
    def script(n, body, headers):
        if body["messages"] and "toolConfig" in body and n == 0:
            return aws_error(400, "ValidationException", "The model returned the following errors: bad schema")
        return converse_reply(tool_input={"verdict": "pass"})

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        result = gateway(tmp_path, url).call(text="grade", schema=VERDICT)
    assert result.usage.model == SONNET and result.data == {"verdict": "pass"}
    assert [(t.model, t.outcome, t.attempts) for t in result.tried] == [(HAIKU, "rejected", 1)]


@pytest.mark.parametrize("reply", [
    (200, {}, {"output": {"message": {"role": "assistant"}}, "usage": {}}),
    (200, {}, b"{not json"),
    converse_reply(),  # no content blocks at all
])
def test_malformed_converse_reply_is_a_typed_error(tmp_path, reply):
    rec = Recorder(lambda n, b, h: reply)
    with loopback_server(rec.handler()) as url:
        with pytest.raises(LLMCallFailed) as err:
            gateway(tmp_path, url, max_attempts=2, routes={"default": ["haiku"]}).call(text="x", schema=VERDICT)
    assert err.value.tried[0].outcome in ("unavailable", "schema_invalid")
    assert len(rec.requests) >= 2


def test_tool_output_that_violates_the_schema_is_repaired(tmp_path):
    replies = [converse_reply(tool_input={"verdict": "maybe"}), converse_reply(tool_input={"verdict": "pass"})]
    rec = Recorder(lambda n, b, h: replies[min(n, 1)])
    with loopback_server(rec.handler()) as url:
        result = gateway(tmp_path, url).call(text="grade", schema=VERDICT)
    assert result.data == {"verdict": "pass"} and result.usage.repairs == 1
    follow_up = rec.requests[1]["body"]["messages"]
    assert follow_up[-1]["role"] == "user" and "not valid" in follow_up[-1]["content"][0]["text"]


def test_models_without_forced_tool_use_get_the_schema_as_an_instruction(tmp_path):
    llama = "us.meta.llama3-3-70b-instruct-v1:0"
    rec = Recorder(lambda n, b, h: converse_reply(text='{"verdict": "pass"}'))
    with loopback_server(rec.handler()) as url:
        gw = gateway(tmp_path, url, models={"llama": ModelSpec(provider="bedrock", model_id=llama)},
                     routes={"default": ["llama"]})
        result = gw.call(prompt="answer_grade", variables={"reference": "r", "answer": "a"}, schema=VERDICT)
    assert result.data == {"verdict": "pass"}
    body = rec.requests[0]["body"]
    assert "toolConfig" not in body and "stopSequences" not in body["inferenceConfig"]
    assert "JSON schema" in body["system"][-1]["text"] and '"verdict"' in body["system"][-1]["text"]
