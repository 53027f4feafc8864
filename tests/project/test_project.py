"""The project's wiring: settings profiles choose the right backends, and secrets stay out of reprs and logs."""

from __future__ import annotations

from spotline.settings import Settings
from tests.conftest import ROOT


def test_profiles_pick_backends(monkeypatch):
    assert (Settings().store.kind, Settings().index.kind, Settings().embedding.kind) == ("local", "lancedb", "local")
    monkeypatch.setenv("SPOTLINE_PROFILE", "aws")
    s = Settings()
    assert (s.store.kind, s.index.kind, s.embedding.kind) == ("s3", "opensearch", "bedrock")
    monkeypatch.setenv("SPOTLINE_STORE__KIND", "local")  # any single field can still be overridden
    assert Settings().store.kind == "local"


def test_invalid_settings_fail_with_a_clear_message(monkeypatch):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("SPOTLINE_CHUNKING__OVERLAP_TOKENS", "500")
    with pytest.raises(ValidationError, match="overlap_tokens"):
        Settings()


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("SPOTLINE_STORE__SECRET_ACCESS_KEY", "super-secret-value-42")
    monkeypatch.setenv("SPOTLINE_INDEX__PASSWORD", "another-secret-43")
    s = Settings()
    dumped = repr(s) + str(s.model_dump()) + s.model_dump_json()
    assert "super-secret-value-42" not in dumped and "another-secret-43" not in dumped
    assert s.store.secret_access_key.get_secret_value() == "super-secret-value-42"


def test_chunk_size_over_the_model_limit_is_refused(res, monkeypatch):
    import pytest

    from tests.conftest import use_settings

    r = use_settings(monkeypatch, res.settings.home, SPOTLINE_CHUNKING__CHUNK_TOKENS="400")
    with pytest.raises(ValueError, match="exceeds the model's limit"):
        r.chunker
