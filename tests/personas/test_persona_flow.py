"""The personas flow on a real Prefect server, the real local model and the committed labelled sample.

Every request the gateway hands the model provider is recorded and searched for the sample's PII
(every labelled value, canaries included): none may be there. Failure paths (a planted leak in
the model's output, schema-invalid output, a thin suite) swap the provider's completion for a
scripted one: the model boundary is the only thing faked, and only there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotline.llm.providers.local import LlamaCppProvider
from spotline.llm.types import Completion
from spotline.personas.sanitize import LeakFound, fold
from spotline.personas.synthesis import CATEGORIES, ThinSuite
from tests.conftest import ROOT, use_settings

# The module's one real run makes 16 model calls and ingests the help centre: about 2 minutes alone
# on 2 cores, more under load. The timeout covers the fixture too.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(900)]

SAMPLE = ROOT / "data" / "production_sample"
DAY = "2026-11-30"
LABELS = [json.loads(line) for line in (SAMPLE / "labels.jsonl").read_text().splitlines()]


def _stage(res) -> None:
    for path in (SAMPLE / f"date={DAY}").iterdir():
        res.store.put(f"exports/production/date={DAY}/{path.name}", path.read_bytes())


def _pii_in(text: str) -> list[str]:
    """Labelled values of the source found in `text` (folded: case, spacing and punctuation ignored).
    Single first names are skipped: a persona the model calls "Lena" is not the sample's Lena."""
    folded = fold(text)[0]
    return sorted({l["entity"] for l in LABELS if " " in l["value"].strip() or l["entity"] != "PERSON"
                   if len(fold(l["value"])[0]) >= 6 and fold(l["value"])[0] in folded})


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """One real run (and a re-run of the same date) with every provider request recorded."""
    from flows.ingest import ingest
    from flows.personas import personas

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("personas")
    mp.setenv("SPOTLINE_TEST_PSEUDONYM_KEY", "a-test-key-of-more-than-16-bytes")
    res = use_settings(mp, tmp, SPOTLINE_PERSONAS__PSEUDONYM_KEY="env:SPOTLINE_TEST_PSEUDONYM_KEY",
                       SPOTLINE_PERSONAS__GROUPS="4", SPOTLINE_PERSONAS__CARDS_PER_GROUP="4",
                       SPOTLINE_PERSONAS__MIN_PER_CATEGORY="2")
    for path in sorted((ROOT / "data" / "sample_corpus").rglob("*.md")):
        res.store.put(f"corpus/{path.relative_to(ROOT / 'data' / 'sample_corpus')}", path.read_bytes())
    ingest()
    _stage(res)
    sent: list[str] = []
    real = LlamaCppProvider.complete

    def recording(self, model, request):
        sent.append(request.text + "\n" + "\n".join(m.content for m in request.messages))
        done = real(self, model, request)
        sent.append(done.text)
        return done

    mp.setattr(LlamaCppProvider, "complete", recording)
    first = personas(day=DAY)
    calls_after_first = len(sent)
    again = personas(day=DAY)
    yield res, first, again, sent, calls_after_first
    mp.undo()
    _forget_settings()


def _forget_settings() -> None:
    """Later tests must not inherit this module's settings (a deleted folder, a scripted model)."""
    from spotline import resources
    from spotline.settings import get_settings

    get_settings.cache_clear()
    resources._resources.clear()


@pytest.fixture(autouse=True)
def _fresh_settings_after_each_test():
    yield
    _forget_settings()


def test_no_pii_of_the_source_is_in_anything_sent_to_or_returned_by_the_model(nightly):
    res, first, _, sent, _ = nightly
    assert len(sent) >= 2 * 16  # every card: its request and its answer
    leaks = {i: _pii_in(text) for i, text in enumerate(sent) if _pii_in(text)}
    assert leaks == {}
    canaries = {fold(l["value"])[0] for l in LABELS if l["canary"]}
    assert len(canaries) >= 200 and not [c for c in canaries for text in sent if c in fold(text)[0]]


def test_the_suite_covers_every_category_and_is_published_with_its_manifest(nightly):
    res, first, _, _, _ = nightly
    assert first["status"] == "published" and set(first["by_category"]) == set(CATEGORIES)
    assert min(first["by_category"].values()) >= 2
    manifest = res.datasets.manifest("personas")
    prompts = res.datasets.read("personas", table="prompts")
    cards = res.datasets.read("personas", table="personas")
    assert manifest.version == DAY and len(prompts) == first["prompts"] and len(cards) == first["personas"]
    extra = manifest.extra
    assert extra["leak_scan"]["after_generation"] == "passed" and extra["sanitizer"]["texts"] == 1200
    assert extra["by_origin"]["model"] == len(cards) and extra["by_origin"]["strategy"] > len(cards)
    assert set(prompts["origin"].str.split(":").str[0]) == {"model", "strategy"}
    assert extra["prompt_versions"] == {"persona_card": "1"} and extra["models"] == ["gemma-3-270m-q4_k_m"]
    published = " ".join(prompts["text"]) + cards.to_json()
    assert _pii_in(published) == []


def test_rerunning_a_date_replaces_that_version_with_byte_identical_content(nightly):
    res, first, again, sent, calls_after_first = nightly
    assert again["content_hash"] == first["content_hash"]
    assert len(sent) == calls_after_first  # the re-run asked the model nothing: cards came from the cache
    assert res.datasets.versions("personas") == [DAY]
    folder = res.settings.layout.datasets + f"personas/version={DAY}/"
    assert len([o for o in res.store.list(folder) if not o.key.endswith("manifest.json")]) == 2


def _scripted(monkeypatch, tmp_path, reply: str, **env: str):
    """Settings for a quick run whose model answers `reply` to everything (cache off: every card asks)."""
    monkeypatch.setenv("SPOTLINE_TEST_PSEUDONYM_KEY", "a-test-key-of-more-than-16-bytes")
    res = use_settings(monkeypatch, tmp_path, SPOTLINE_PERSONAS__PSEUDONYM_KEY="env:SPOTLINE_TEST_PSEUDONYM_KEY",
                       SPOTLINE_LLM__CACHE_ENABLED="false", SPOTLINE_PERSONAS__GROUPS="2",
                       SPOTLINE_PERSONAS__CARDS_PER_GROUP="1", **env)
    _stage(res)
    calls = []

    def complete(self, model, request):
        calls.append(request)
        return Completion(text=reply, input_tokens=10, output_tokens=10)

    monkeypatch.setattr(LlamaCppProvider, "complete", complete)
    return res, calls


def test_a_source_value_planted_in_the_models_output_fails_the_run_and_publishes_nothing(monkeypatch, tmp_path):
    from flows.personas import personas

    victim = next(l["value"] for l in LABELS if l["canary"] and l["entity"] == "PERSON" and l["table"] == "users")
    card = {"name": "Lena", "role": "accountant", "goal": f"ask {victim} about the refund", "tone": "friendly",
            "first_message": "Hello, how do I issue a credit note for a partial refund on an invoice?"}
    res, calls = _scripted(monkeypatch, tmp_path, json.dumps(card), SPOTLINE_PERSONAS__MIN_PER_CATEGORY="0")
    with pytest.raises(LeakFound, match="after generation") as caught:
        personas(day=DAY)
    assert calls and victim.lower() not in str(caught.value).lower() and ".goals (PERSON)" in str(caught.value)
    assert res.datasets.latest("personas") is None and res.datasets.versions("personas") == []


def test_schema_invalid_cards_are_retried_then_skipped_and_a_thin_suite_fails_loudly(monkeypatch, tmp_path):
    from flows.personas import personas

    res, calls = _scripted(monkeypatch, tmp_path, '{"name": "Lena", "tone": "sarcastic"', SPOTLINE_LLM__REPAIR_ATTEMPTS="1",
                           SPOTLINE_PERSONAS__MIN_PER_CATEGORY="3")
    with pytest.raises(ThinSuite, match="10 categories below the minimum of 3 prompts"):
        personas(day=DAY)
    assert len(calls) == 2 * 1 * 2  # 2 groups x 1 card x (first try + 1 repair)
    assert res.datasets.latest("personas") is None
