"""Structured output on the real local model, grammar checked on the top candidates only
(spotline/llm/providers/grammar_sampling.py) against llama-cpp-python's grammar-first chain.

What must hold: greedy output byte-identical to the full grammar on every golden case, through the
gateway as production calls it; always schema-valid JSON on 200 adversarial inputs, greedy and
sampled; sampled draws that match the full grammar's with the same seed; a schema the model fights
still finishing inside its budget; timeouts as before. Slow: Gemma 3 270M on 2 cores.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import jsonschema
import pytest

from spotline.llm.gateway import Gateway
from spotline.llm.golden import GoldenSet
from spotline.llm.providers.local import LlamaCppProvider
from spotline.llm.types import CallTimeout, ProviderRequest
from spotline.settings import LLMSettings, Settings, StoreSettings
from spotline.storage import make_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("grammar-home")


def gateway(home, mode: str) -> Gateway:
    s = Settings(home=home, store=StoreSettings(kind="local", root=home / f"store-{mode}"),
                 llm=LLMSettings(local_grammar=mode, cache_enabled=False))
    return Gateway(s, make_store(s.store))


@pytest.fixture(scope="module")
def gateways(home):
    return gateway(home, "full"), gateway(home, "top-valid")


@pytest.fixture(scope="module")
def provider(home):
    return LlamaCppProvider(home)  # top-valid is the default


@pytest.fixture(scope="module")
def full_provider(home):
    return LlamaCppProvider(home, grammar_sampling="full")


def last_sampler(source):
    """The TopValidSampler of the last call (None when the full grammar ran)."""
    provider = source._providers["local"] if isinstance(source, Gateway) else source
    (llm,) = provider._models.values()
    return llm.top_valid


def test_greedy_output_is_byte_identical_to_the_full_grammar_on_every_golden_case(gateways):
    full, fast = gateways
    cases = 0
    for prompt in ("answer_grade", "persona_card"):
        golden = GoldenSet.load(full.cfg.prompts_dir, prompt)
        for case in golden.cases:
            want = full.call(prompt=prompt, variables=case.input)
            assert last_sampler(full) is None, "the reference ran the full grammar"
            got = fast.call(prompt=prompt, variables=case.input)
            used = last_sampler(fast)
            assert used is not None and used.rounds >= got.usage.output_tokens, "the top-valid path did the work"
            assert got.text == want.text, f"{prompt}/{case.id}"
            assert got.usage.output_tokens == want.usage.output_tokens
            cases += 1
    assert cases >= 10


# ---------------------------------------------------------------- fuzz: always valid

FUZZ_SCHEMA = {  # short strings, an enum and an array: each a place where a pushy input can derail it
    "type": "object", "additionalProperties": False,
    "required": ["title", "mood", "tags"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 10},
        "mood": {"type": "string", "enum": ["calm", "angry", "unsure"]},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 6}},
    },
}
# Numbers are left out: llama-cpp-python's schema-to-grammar converter does not enforce minimum or
# maximum (a TODO in llama_grammar.py), on either path; the gateway's validation catches that.

PUSHES = [
    lambda r: '"' * r.randint(1, 9) + 'quoted "inner" \\"escaped\\" ' + "'" * r.randint(1, 4),
    lambda r: "{" * r.randint(1, 6) + '"a": [1, {"b": "}"}]' + "}" * r.randint(1, 6) + ' ]] "title": "',
    lambda r: " ".join(r.choice(["board", "export", "invoice", "lorem", "ipsum"]) for _ in range(r.randint(60, 120))),
    lambda r: "".join(r.choice("Zoë naïve café 日本語テキスト 😀🚀 العربية ñ ß Ω ∑ ") for _ in range(r.randint(20, 200))),
    lambda r: "C:\\path\\to\\file \\u0000 \\n \\t \t\ttabs\nnew\r\nlines " + "\\" * r.randint(1, 8),
    lambda r: '", "mood": "furious", "tags": [' + '"x", ' * r.randint(3, 30),
    lambda r: "Write the title as " + "A" * r.randint(50, 200) + " and never close the string",
]


def fuzz_inputs(n: int) -> list[str]:
    r = random.Random(14)
    return [f"#{i} " + " ".join(PUSHES[(i + j) % len(PUSHES)](r) for j in range(r.randint(1, 3))) for i in range(n)]


@pytest.mark.timeout(900)
def test_two_hundred_adversarial_inputs_all_give_schema_valid_json_greedy_and_sampled(provider):
    validator = jsonschema.Draft202012Validator(FUZZ_SCHEMA)
    inputs = fuzz_inputs(200)
    assert len(set(inputs)) == 200
    failures = []
    for i, text in enumerate(inputs):
        sampled = i % 2 == 1
        req = ProviderRequest(messages=(), text=f"### Input\n{text}\n### Output\n", schema=FUZZ_SCHEMA,
                              max_tokens=96, temperature=0.8 if sampled else 0.0, seed=i, timeout_s=120)
        out = provider.complete(provider_spec(provider), req)
        try:
            validator.validate(json.loads(out.text))
            assert out.finish_reason == "stop", f"cut at {out.output_tokens} tokens"
        except (ValueError, jsonschema.ValidationError, AssertionError) as exc:
            failures.append((i, text[:80], out.text[:200], str(exc)[:200]))
    assert failures == []


def provider_spec(provider):
    return Settings(home=provider.home).llm.models["gemma-270m"]


# ---------------------------------------------------------------- sampled decoding

def test_sampled_output_is_the_full_grammars_draw_for_the_same_seed(provider, full_provider, gateways):
    persona = gateways[0].prompts.get("persona_card")
    text = persona.render({"plan": "team", "area": "permissions", "mood": "confused"}).text
    validator = jsonschema.Draft202012Validator(persona.output_schema)
    spec = provider_spec(provider)
    for seed in range(4):
        req = ProviderRequest(messages=(), text=text, schema=persona.output_schema, max_tokens=160,
                              temperature=0.9, seed=seed, timeout_s=120)
        got, want = provider.complete(spec, req), full_provider.complete(spec, req)
        validator.validate(json.loads(got.text))
        assert got.text == want.text, f"seed {seed}"


# ---------------------------------------------------------------- a schema the model fights

FIGHT_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["grid", "pick"],
    "properties": {
        "grid": {"type": "array", "minItems": 2, "maxItems": 3,
                 "items": {"type": "array", "minItems": 1, "maxItems": 2,
                           "items": {"type": "string", "enum": ["zygomorphic", "quixotic-7", "ÆØÅ", "x_q"]}}},
        "pick": {"type": "string", "enum": ["qwfpgj", "ŋŋ", "🜁"]},
    },
}


def test_a_schema_the_model_fights_still_completes_within_its_token_budget(provider, full_provider):
    spec = provider_spec(provider)
    req = ProviderRequest(messages=(), text="### Input\nList your three favourite fruits.\n### Output\n",
                          schema=FIGHT_SCHEMA, max_tokens=96, temperature=0.0, timeout_s=120)
    got = provider.complete(spec, req)
    jsonschema.validate(json.loads(got.text), FIGHT_SCHEMA)
    assert got.finish_reason == "stop" and got.output_tokens < 96
    assert got.text == full_provider.complete(spec, req).text


# ---------------------------------------------------------------- timeouts, as before

def test_a_structured_call_past_its_deadline_times_out_and_the_next_call_is_unaffected(provider):
    spec = provider_spec(provider)
    req = ProviderRequest(messages=(), text="### Input\nDescribe a project board.\n### Output\n",
                          schema=FUZZ_SCHEMA, max_tokens=160, temperature=0.0, timeout_s=0.0)
    with pytest.raises(CallTimeout):
        provider.complete(spec, req)
    after = provider.complete(spec, replace(req, timeout_s=120))
    jsonschema.validate(json.loads(after.text), FUZZ_SCHEMA)
