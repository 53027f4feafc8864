"""The same flow with the object store on a real S3 server (SeaweedFS on loopback): sources,
embedding cache, quarantine records and Prefect task results all live in the bucket."""

from __future__ import annotations

import pytest

from flows.ingest import ingest
from runtime.results import save_result_storage_block
from tests.conftest import s3_env, use_settings
from tests.ingest.test_ingest_flow import DOCS, put_all

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_ingest_from_s3(monkeypatch, tmp_path, s3_server, shared_embedder):
    res = use_settings(monkeypatch, tmp_path, **s3_env(s3_server, "ingest-e2e"))
    res.__dict__["_embedder"] = shared_embedder
    res.store.ensure_bucket()
    save_result_storage_block(res.settings)
    put_all(res.store, {**DOCS, "corpus/broken.json": "{"})

    first = ingest.with_options(result_storage="s3-bucket/spotline-results")(prefix="corpus/")
    assert (first.new, first.failed) == (4, 1)
    assert all(r["source_uri"].startswith("s3://ingest-e2e/corpus/") for r in res.index.all_records())
    keys = [o.key for o in res.store.list("_spotline/")]
    assert any(k.startswith("_spotline/cache/embeddings/") for k in keys)
    assert any(k.startswith("_spotline/quarantine/") for k in keys)
    assert any(k.startswith("_spotline/prefect-results/") for k in keys), "task results persisted in S3"

    res.store.put("corpus/billing/refunds.md", DOCS["corpus/billing/refunds.md"].replace("five", "two").encode())
    res.store.delete("corpus/sso.html")
    second = ingest.with_options(result_storage="s3-bucket/spotline-results")(prefix="corpus/")
    assert (second.changed, second.unchanged, second.deleted, second.chunks_embedded) == (1, 2, 1, 1)
