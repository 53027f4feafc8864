"""The LLM gateway against an OpenAI-compatible endpoint on loopback (a recording fake: no real
provider can be reached here), with the real httpx client, the real object-store cache and
the real limiter, breaker, retries and schema validation."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from spotline.llm.gateway import Gateway
from spotline.llm.types import LLMCallFailed, Message
from spotline.settings import LLMSettings, ModelSpec, Settings, StoreSettings
from spotline.storage import make_store
from tests.llm.fake_servers import Recorder, chat_reply
from tests.http_boundary import loopback_server, no_proxies

KEY = "sk-test-9f8e7d6c5b4a-very-secret"
PERSON = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    no_proxies(monkeypatch)
    monkeypatch.setenv("SPOTLINE_TEST_LLM_KEY", KEY)


def make_gateway(tmp_path, url: str, sleeps: list[float] | None = None, **llm) -> Gateway:
    models = {
        "primary": ModelSpec(provider="openai", model_id="gpt-4.1-mini", base_url=url),
        "backup": ModelSpec(provider="openai", model_id="gpt-4.1", base_url=url),
    }
    cfg = dict(models=models, routes={"default": ["primary"], "chain": ["primary", "backup"]},
               openai_api_key="env:SPOTLINE_TEST_LLM_KEY", backoff_base_s=0.01, backoff_max_s=1.0, timeout_s=5.0)
    cfg.update(llm)
    settings = Settings(store=StoreSettings(kind="local", root=tmp_path / "store"), llm=LLMSettings(**cfg))
    sleeps = sleeps if sleeps is not None else []
    return Gateway(settings, make_store(settings.store), sleep=lambda s: sleeps.append(s) or time.sleep(min(s, 0.05)))


def test_structured_call_returns_validated_object_with_usage_and_cost(tmp_path):
    rec = Recorder(lambda n, body, h: chat_reply('{"name": "Ada", "age": 36}', 1000, 500))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        result = gw.call(messages=[Message("user", "Who wrote the first program?")], schema=PERSON)
    assert result.data == {"name": "Ada", "age": 36}
    u = result.usage
    assert (u.provider, u.model, u.input_tokens, u.output_tokens, u.attempts) == ("openai", "gpt-4.1-mini", 1000, 500, 1)
    assert u.cost_usd == pytest.approx((1000 * 0.4 + 500 * 1.6) / 1e6)  # the settings' price table
    sent = rec.requests[0]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"]["response_format"]["json_schema"]["schema"] == PERSON
    assert sent["body"]["model"] == "gpt-4.1-mini"


def test_throttling_is_retried_honouring_retry_after(tmp_path):
    def script(n, body, headers):
        if n < 2:
            return 429, {"Retry-After": "0.2"}, {"error": {"message": "rate limited"}}
        return chat_reply('{"name": "Bo", "age": 3}')

    sleeps: list[float] = []
    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        result = make_gateway(tmp_path, url, sleeps).call(text="hi", schema=PERSON)
    assert result.data["name"] == "Bo"
    assert result.usage.attempts == 3 and len(rec.requests) == 3
    assert sleeps == [0.2, 0.2]  # Retry-After, not the (0.01 s) backoff


def test_server_errors_exhaust_retries_then_fall_back_to_the_next_model(tmp_path):
    def script(n, body, headers):
        if body["model"] == "gpt-4.1-mini":
            return 503, {}, {"error": {"message": "overloaded"}}
        return chat_reply('{"name": "Cy", "age": 9}')

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, max_attempts=3)
        result = gw.call("chain", text="hi", schema=PERSON)
    assert result.usage.model == "gpt-4.1" and result.data["name"] == "Cy"
    assert [(t.model, t.outcome, t.attempts) for t in result.tried] == [("gpt-4.1-mini", "unavailable", 3)]
    rows = {r["model"]: r for r in gw.ledger.summary()}
    assert rows["gpt-4.1-mini"]["errors"] == "unavailable: 1" and rows["gpt-4.1"]["ok"] == 1


def test_rejected_call_is_not_retried(tmp_path):
    rec = Recorder(lambda n, b, h: (400, {}, {"error": {"message": "bad request: unknown parameter"}}))
    with loopback_server(rec.handler()) as url:
        with pytest.raises(LLMCallFailed) as err:
            make_gateway(tmp_path, url).call(text="hi")
    assert len(rec.requests) == 1
    assert err.value.tried[0].outcome == "rejected" and "unknown parameter" in str(err.value)


@pytest.mark.parametrize("reply", [
    (200, {"content-type": "text/html"}, b"<html>502 from a proxy</html>"),
    (200, {}, {"choices": []}),
    (200, {}, {"choices": [{"message": {"content": None}}]}),
])
def test_malformed_replies_are_retried_and_end_in_a_typed_error(tmp_path, reply):
    rec = Recorder(lambda n, b, h: reply)
    with loopback_server(rec.handler()) as url:
        with pytest.raises(LLMCallFailed) as err:
            make_gateway(tmp_path, url, max_attempts=2).call(text="hi")
    assert len(rec.requests) == 2
    assert err.value.tried[0].outcome == "unavailable" and "malformed" in str(err.value)


def test_schema_violation_is_repaired_with_the_error_fed_back(tmp_path):
    replies = ['{"name": "Di", "age": "old"}', '{"name": "Di", "age": 70}']
    rec = Recorder(lambda n, b, h: chat_reply(replies[min(n, 1)], 100, 10))
    with loopback_server(rec.handler()) as url:
        result = make_gateway(tmp_path, url).call(text="hi", schema=PERSON)
    assert result.data == {"name": "Di", "age": 70} and result.usage.repairs == 1
    assert result.usage.input_tokens == 200  # both attempts are paid for
    second = rec.requests[1]["body"]["messages"]
    assert second[-2] == {"role": "assistant", "content": replies[0]}
    assert "age" in second[-1]["content"] and "not valid" in second[-1]["content"]


def test_schema_violation_after_repairs_falls_back_then_fails_typed(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply("Sure! Here is the JSON you asked for."))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, repair_attempts=2)
        with pytest.raises(LLMCallFailed) as err:
            gw.call("chain", text="hi", schema=PERSON)
    assert [t.outcome for t in err.value.tried] == ["schema_invalid", "schema_invalid"]
    assert len(rec.requests) == 6  # (1 + 2 repairs) per model, then the typed error, no crash


def test_timeouts_are_enforced_per_call(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply("late"), delay_s=1.0)
    with loopback_server(rec.handler()) as url:
        started = time.perf_counter()
        with pytest.raises(LLMCallFailed) as err:
            make_gateway(tmp_path, url, timeout_s=0.3, max_attempts=2).call(text="hi")
        elapsed = time.perf_counter() - started
    assert err.value.tried[0].outcome == "timeout"
    assert elapsed < 1.5  # two 0.3 s attempts, not two full 1 s replies


def test_circuit_breaker_skips_a_dead_provider_quickly(tmp_path):
    rec = Recorder(lambda n, b, h: (503, {}, {"error": "down"}))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, max_attempts=1, breaker_failures=3, breaker_cooldown_s=0.5)
        outcomes = []
        for _ in range(6):
            with pytest.raises(LLMCallFailed) as err:
                gw.call(text="hi")
            outcomes.append(err.value.tried[0].outcome)
        assert outcomes == ["unavailable"] * 3 + ["circuit_open"] * 3
        assert len(rec.requests) == 3  # open circuit: no traffic at all
        time.sleep(0.55)  # cooldown over: one trial call goes through (half-open)
        with pytest.raises(LLMCallFailed):
            gw.call(text="hi")
        assert len(rec.requests) == 4


def test_identical_calls_hit_the_cache_and_record_the_savings(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply('{"name": "Ed", "age": 5}', 1000, 1000))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        first = gw.call(text="same question", schema=PERSON)
        second = gw.call(text="same question", schema=PERSON)
        other = gw.call(text="another question", schema=PERSON)
        fresh = make_gateway(tmp_path, url).call(text="same question", schema=PERSON)  # new process, same store
    assert len(rec.requests) == 2
    assert not first.usage.cache_hit and second.usage.cache_hit and fresh.usage.cache_hit and not other.usage.cache_hit
    assert second.data == first.data == fresh.data
    assert second.usage.cost_usd == 0 and second.usage.saved_usd == pytest.approx(first.usage.cost_usd)
    assert list((tmp_path / "store" / "_spotline" / "cache" / "llm").rglob("*.json"))
    row = gw.ledger.summary()[0]
    assert row["cache_hits"] == 1 and row["saved_usd"] == pytest.approx(first.usage.cost_usd, abs=1e-6)


def test_sampled_calls_are_cached_only_when_asked(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply(f"answer {n}"))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        a, b = (gw.call(text="write a poem", temperature=0.8) for _ in range(2))
        c, d = (gw.call(text="write a haiku", temperature=0.8, cache=True) for _ in range(2))
    assert a.text != b.text and not b.usage.cache_hit
    assert c.text == d.text and d.usage.cache_hit
    assert len(rec.requests) == 3


def test_concurrent_identical_calls_are_deduplicated_in_flight(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply('{"name": "Flo", "age": 1}'), delay_s=0.4)
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        results = gw.map([{"text": "popular", "schema": PERSON}] * 8, max_workers=8)
    assert len(rec.requests) == 1
    assert all(r.data == {"name": "Flo", "age": 1} for r in results)
    assert sum(r.usage.cache_hit for r in results) == 7


def test_concurrency_limit_bounds_calls_in_flight(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply("ok"), delay_s=0.15)
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, concurrency={"openai": 3}, cache_enabled=False)
        results = gw.map([{"text": f"q{i}"} for i in range(12)], max_workers=12)
    assert all(r.text == "ok" for r in results)
    assert rec.peak == 3


def test_rate_limit_spaces_call_starts(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply("ok"))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, rate_per_minute={"openai": 600}, cache_enabled=False)  # 10/s, burst 10
        started = time.perf_counter()
        gw.map([{"text": f"q{i}"} for i in range(20)], max_workers=20)
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.9  # 10 in the burst, the next 10 at 10 per second


def test_map_keeps_order_and_isolates_failures(tmp_path):
    def script(n, body, headers):
        q = body["messages"][-1]["content"]
        return (400, {}, {"error": "no"}) if q == "bad" else chat_reply(f"echo {q}")

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        out = make_gateway(tmp_path, url).map([{"text": t} for t in ("a", "bad", "c")])
    assert out[0].text == "echo a" and out[2].text == "echo c"
    assert isinstance(out[1], LLMCallFailed)


def test_prompt_name_version_and_hash_travel_with_the_call(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply(json.dumps({
        "name": "Gus", "role": "teacher", "goal": "share a board with students", "tone": "friendly",
        "first_message": "Hi! How can I share a board with my class?"})))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        r1 = gw.call(prompt="persona_card", variables={"plan": "team", "area": "sharing", "mood": "friendly"})
        r2 = gw.call(prompt="persona_card", variables={"plan": "free", "area": "sharing", "mood": "friendly"})
    assert (r1.usage.prompt, r1.usage.prompt_version) == ("persona_card", "1")
    assert r1.usage.prompt_hash and r1.usage.prompt_hash != r2.usage.prompt_hash
    msgs = rec.requests[0]["body"]["messages"]
    assert msgs[0]["role"] == "system" and msgs[-1]["content"].startswith("plan: team")
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * 3  # the few-shot examples


def test_every_call_is_one_json_log_line(tmp_path, caplog):
    rec = Recorder(lambda n, b, h: chat_reply("fine"))
    with loopback_server(rec.handler()) as url, caplog.at_level(logging.INFO, logger="spotline.llm.calls"):
        make_gateway(tmp_path, url).call(text="hello")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "spotline.llm.calls"]
    assert len(lines) == 1
    assert lines[0]["event"] == "llm_call" and lines[0]["model"] == "gpt-4.1-mini" and lines[0]["outcome"] == "ok"
    assert lines[0]["input_tokens"] == 50 and "latency_s" in lines[0]


def test_the_api_key_never_reaches_logs_artifact_rows_or_exceptions(tmp_path, caplog):
    """A provider that echoes the key back (some proxies do, in 401 bodies) must not leak it."""

    def script(n, body, headers):
        sent = headers.get("Authorization", "")
        return 401, {}, {"error": {"message": f"Incorrect API key provided: {sent.removeprefix('Bearer ')}"}}

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url, caplog.at_level(logging.DEBUG):
        gw = make_gateway(tmp_path, url)
        with pytest.raises(LLMCallFailed) as err:
            gw.call(text="hi")
    assert rec.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"  # the key was really used
    exposed = [str(err.value), repr(err.value), caplog.text, json.dumps(gw.ledger.summary()),
               json.dumps([r.as_dict() for r in gw.ledger.rows()]), repr(gw.settings), repr(gw.secrets._cache)]
    for text in exposed:
        assert KEY not in text
    assert "Incorrect API key provided: ***" in str(err.value)


def test_in_process_limiter_is_shared_by_threads(tmp_path):
    """One gateway, many task threads: the provider budget is global to the process."""
    rec = Recorder(lambda n, b, h: chat_reply("ok"), delay_s=0.1)
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, concurrency={"openai": 2}, cache_enabled=False)
        threads = [threading.Thread(target=gw.map, args=([{"text": f"t{t}-{i}"} for i in range(3)],)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(rec.requests) == 9 and rec.peak == 2


def test_throttling_alone_never_opens_the_circuit(tmp_path):
    rec = Recorder(lambda n, b, h: (429, {"Retry-After": "0"}, {"error": "slow down"}) if n < 8 else chat_reply("ok"))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, max_attempts=2, breaker_failures=3)
        for _ in range(4):
            with pytest.raises(LLMCallFailed) as err:
                gw.call(text="hi", cache=False)
            assert err.value.tried[0].outcome == "unavailable"
        assert gw.breaker("openai").state == "closed"
        assert gw.call(text="hi", cache=False).text == "ok"


def test_a_trial_call_that_fails_for_another_reason_does_not_wedge_the_breaker(tmp_path, monkeypatch):
    rec = Recorder(lambda n, b, h: (503, {}, {"error": "down"}) if n < 2 else chat_reply("back"))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, max_attempts=1, breaker_failures=2, breaker_cooldown_s=0.2)
        for _ in range(2):
            with pytest.raises(LLMCallFailed):
                gw.call(text="x", cache=False)
        time.sleep(0.25)
        gw.secrets.invalidate()
        monkeypatch.delenv("SPOTLINE_TEST_LLM_KEY")  # the half-open trial dies on a missing secret
        with pytest.raises(LLMCallFailed) as err:
            gw.call(text="x", cache=False)
        assert "SPOTLINE_TEST_LLM_KEY is not set" in str(err.value)
        monkeypatch.setenv("SPOTLINE_TEST_LLM_KEY", KEY)
        assert gw.call(text="x", cache=False).text == "back"  # the next call was allowed to try


def test_a_broken_cache_store_costs_the_cache_not_the_answer(tmp_path):
    class BrokenStore:
        def get(self, key):
            raise PermissionError("AccessDenied")

        def put(self, key, data, content_type=None):
            raise ConnectionError("SlowDown")

    rec = Recorder(lambda n, b, h: chat_reply('{"name": "Hal", "age": 9}'))
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        gw.cache.store = BrokenStore()
        first, second = gw.call(text="q", schema=PERSON), gw.call(text="q", schema=PERSON)
    assert first.data == second.data == {"name": "Hal", "age": 9}
    assert second.usage.cache_hit and len(rec.requests) == 1  # kept in memory


def test_waiters_share_the_leaders_failure_instead_of_stampeding(tmp_path):
    rec = Recorder(lambda n, b, h: (400, {}, {"error": "bad"}), delay_s=0.3)
    with loopback_server(rec.handler()) as url:
        out = make_gateway(tmp_path, url).map([{"text": "same"}] * 6, max_workers=6)
    assert all(isinstance(r, LLMCallFailed) for r in out)
    assert len(rec.requests) == 1


def test_map_turns_a_bad_item_into_a_typed_failure(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply(json.dumps({
        "name": "Ida", "role": "analyst", "goal": "read the audit log", "tone": "neutral",
        "first_message": "Where can I find the audit log for my workspace?"})))
    with loopback_server(rec.handler()) as url:
        out = make_gateway(tmp_path, url).map([
            {"prompt": "persona_card", "variables": {"plan": "team", "area": "audit", "mood": "neutral"}},
            {"prompt": "persona_card", "variables": {"plan": "team"}},  # missing variables
            {"text": "hi", "models": ["no-such-model"]},
        ])
    assert out[0].data["tone"] == "neutral"
    assert isinstance(out[1], LLMCallFailed) and "'area' is undefined" in str(out[1])
    assert isinstance(out[2], LLMCallFailed) and "no-such-model" in str(out[2])


def test_a_rotated_key_is_re_read_after_a_401(tmp_path, monkeypatch):
    current = {"key": KEY}

    def script(n, body, headers):
        if headers.get("Authorization") != f"Bearer {current['key']}":
            return 401, {}, {"error": "invalid key"}
        return chat_reply("authorised")

    rec = Recorder(script)
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url)
        assert gw.call(text="a", cache=False).text == "authorised"
        current["key"] = "sk-rotated-1111222233334444"
        monkeypatch.setenv("SPOTLINE_TEST_LLM_KEY", current["key"])  # rotated in the store, old one cached
        result = gw.call(text="b", cache=False)
    assert result.text == "authorised" and result.usage.attempts == 1
    assert [r["headers"]["Authorization"][-4:] for r in rec.requests] == [KEY[-4:], KEY[-4:], "4444"]


def test_prompt_stop_strings_are_not_sent_to_chat_models(tmp_path):
    rec = Recorder(lambda n, b, h: chat_reply(json.dumps({
        "leak": False, "hallucination": False, "verdict": "pass", "reason": "fine"})))
    with loopback_server(rec.handler()) as url:
        make_gateway(tmp_path, url).call(prompt="answer_grade", variables={"reference": "r", "answer": "a"})
    assert "stop" not in rec.requests[0]["body"]


def test_usage_is_billed_to_the_scope_of_the_calling_context_even_when_runs_overlap(tmp_path):
    from spotline.usage import usage_scope

    rec = Recorder(lambda n, body, h: (time.sleep(0.01), chat_reply('{"name": "Ada", "age": 36}', 100, 10))[1])
    with loopback_server(rec.handler()) as url:
        gw = make_gateway(tmp_path, url, cache_enabled=False)
        start = threading.Barrier(2)

        def run(scope: str, calls: int) -> None:
            with usage_scope(scope):
                start.wait()
                for i in range(calls):
                    gw.call(text=f"{scope} {i}", schema=PERSON)
                gw.map([{"text": f"{scope} fan-out {i}", "schema": PERSON} for i in range(3)])  # threads inherit it

        threads = [threading.Thread(target=run, args=("run-a", 4)), threading.Thread(target=run, args=("run-b", 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert gw.ledger.summary("run-a")[0]["calls"] == 7 and gw.ledger.summary("run-a")[0]["input_tokens"] == 700
    assert gw.ledger.summary("run-b")[0]["calls"] == 5
    assert gw.ledger.summary()[0]["calls"] == 12 and gw.ledger.summary("run-c") == []
