"""The ingest-documents flow on a real Prefect server, the real MiniLM model and a LanceDB index."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client

from flows.ingest import ingest
from spotline.ingestion import pipeline as core
from spotline.index.base import IndexModelMismatch
from spotline.index.lance import LanceIndex

pytestmark = pytest.mark.usefixtures("prefect_api")

DOCS = {
    "corpus/billing/refunds.md": "# Refunds\n\nRefunds are issued within five business days.\n\n"
    "## Partial refunds\n\nAdmins can refund part of an invoice from the invoice page.",
    "corpus/account/password.txt": "Resetting your password\n\nUse the Forgot password link on the sign-in page. "
    "The link expires after 30 minutes.",
    "corpus/api/limits.json": json.dumps({"title": "API rate limits", "body": "The API allows 100 requests per minute.\n\n"
                                          "Bursts above that receive HTTP 429 with a Retry-After header."}),
    "corpus/sso.html": "<html><head><title>Single sign-on</title></head><body><h1>SSO</h1><p>Okta and Azure AD are "
    "supported on the Enterprise plan.</p></body></html>",
}


def put_all(store, docs):
    for key, text in docs.items():
        store.put(key, text.encode() if isinstance(text, str) else text)


def snapshot(res):
    """The index as comparable rows (without vectors), store root made relative."""
    root = res.store.uri("")
    return [{**r, "source_uri": r["source_uri"].replace(root, "")} for r in res.index.all_records()]


def test_first_run_indexes_everything_then_unchanged_rerun_embeds_nothing(res, embedder):
    put_all(res.store, DOCS)
    first = ingest(prefix="corpus/")
    assert (first.new, first.changed, first.unchanged, first.failed) == (4, 0, 0, 0)
    assert first.chunks_embedded == len(embedder.texts) > 0
    assert first.index_chunks == res.index.count() == first.chunks_written
    assert {r["source_uri"] for r in snapshot(res)} == set(DOCS)

    embedder.reset()
    second = ingest(prefix="corpus/")
    assert embedder.calls == 0 and embedder.texts == []
    assert (second.new, second.changed, second.unchanged, second.chunks_written) == (0, 0, 4, 0)


def test_a_reupload_of_the_same_folder_leaves_the_next_run_nothing_to_read(res, embedder, tmp_path, monkeypatch):
    from spotline.storage.local import LocalObjectStore
    from spotline.storage.upload import upload_folder

    src = tmp_path / "export"
    for key, text in DOCS.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_text(text)
    upload_folder(res.store, src / "corpus", "corpus/")
    ingest(prefix="corpus/")
    report = upload_folder(res.store, src / "corpus", "corpus/")  # what re-running the demo does
    assert report.uploaded == [] and len(report.unchanged) == len(DOCS)

    reads = []
    for name in ("get", "get_file"):
        real = getattr(LocalObjectStore, name)
        monkeypatch.setattr(LocalObjectStore, name,
                            lambda self, key, *a, _real=real, **kw: (reads.append(key), _real(self, key, *a, **kw))[1])
    embedder.reset()
    second = ingest(prefix="corpus/")
    assert (second.new, second.changed, second.unchanged) == (0, 0, len(DOCS))
    assert [k for k in reads if k.startswith("corpus/")] == [], "an unchanged document was read"
    assert embedder.calls == 0


def test_edit_reembeds_only_the_changed_chunks(res, embedder):
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    before = {r["chunk_hash"] for r in snapshot(res)}
    embedder.reset()

    edited = DOCS["corpus/billing/refunds.md"].replace("five business days", "three business days")
    res.store.put("corpus/billing/refunds.md", edited.encode())
    run = ingest(prefix="corpus/")

    assert (run.changed, run.unchanged, run.new) == (1, 3, 0)
    after = snapshot(res)
    new_hashes = {r["chunk_hash"] for r in after} - before
    assert len(embedder.texts) == run.chunks_embedded == len(new_hashes) == 1  # the edited section only
    assert "three business days" in embedder.texts[0]
    assert not any("five business days" in r["text"] for r in after), "stale chunk removed"
    assert len(after) == len({r["chunk_id"] for r in after})


def test_touched_but_identical_document_costs_no_embedding(res, embedder):
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    embedder.reset()
    res.store.put("corpus/account/password.txt", DOCS["corpus/account/password.txt"].encode())  # new mtime
    run = ingest(prefix="corpus/")
    assert embedder.texts == [] and run.unchanged == 4 and run.changed == 0


def test_removed_document_is_deleted_in_full_sync_only(res, embedder):
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    res.store.delete("corpus/sso.html")
    partial = ingest(prefix="corpus/", full_sync=False)
    assert partial.deleted == 0 and any(r["source_uri"] == "corpus/sso.html" for r in snapshot(res))
    full = ingest(prefix="corpus/")
    assert full.deleted == 1
    assert not any(r["source_uri"] == "corpus/sso.html" for r in snapshot(res))
    assert res.store.head(res.embedding_cache.key(res.store.uri("corpus/sso.html"))) is None


def test_bad_files_are_set_aside_and_nothing_else_is_lost(res, embedder):
    put_all(res.store, DOCS)
    bad = {"corpus/empty.md": b"", "corpus/blob.txt": bytes(range(256)) * 8, "corpus/broken.json": b"{",
           "corpus/slides.pptx": b"PK\x03\x04", "corpus/scan.pdf": b"%PDF-1.4\n%%EOF"}
    put_all(res.store, bad)
    run = ingest(prefix="corpus/")
    assert run.new == 4 and run.failed == 5
    assert {r["source_uri"] for r in snapshot(res)} == set(DOCS)
    assert {s["key"]: s["reason"] for s in run.set_aside} == {
        "corpus/empty.md": "empty", "corpus/blob.txt": "binary", "corpus/broken.json": "corrupt",
        "corpus/slides.pptx": "unsupported-format", "corpus/scan.pdf": "corrupt"}
    records = [json.loads(res.store.get(o.key)) for o in res.store.list(core.quarantine_prefix(res))]
    assert {r["key"]: r["reason"] for r in records} == {s["key"]: s["reason"] for s in run.set_aside}
    assert all(r["detail"] and r["flow_run_id"] for r in records)

    # Fixing a file clears its quarantine record and indexes it.
    res.store.put("corpus/broken.json", json.dumps({"title": "Fixed", "body": "Now valid."}).encode())
    again = ingest(prefix="corpus/")
    assert again.new == 1 and again.failed == 4
    assert "corpus/broken.json" not in {json.loads(res.store.get(o.key))["key"]
                                        for o in res.store.list(core.quarantine_prefix(res))}


def test_corrupt_new_version_keeps_the_previous_one_searchable(res, embedder):
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    res.store.put("corpus/api/limits.json", b'{"title": "API rate limits", "body": ')
    run = ingest(prefix="corpus/")
    assert run.failed == 1
    assert any("100 requests per minute" in r["text"] for r in snapshot(res))
    record = json.loads(res.store.get(core.quarantine_key(res, res.store.uri("corpus/api/limits.json"))))
    assert record["kept_previous_version"] is True


def test_interrupted_replacement_is_finished_by_the_next_run(res, embedder, monkeypatch):
    """Crash after the new chunks are written, before stale ones are deleted: the document stays
    searchable (old + new), and the next run converges to exactly the clean result."""
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    res.store.put("corpus/billing/refunds.md", DOCS["corpus/billing/refunds.md"].replace("five", "seven").encode())

    sources = core.list_sources(res, "corpus/")
    plan = core.plan_sync(res, sources, res.store.uri("corpus/"), True)

    def crash(ids):
        raise KeyboardInterrupt("killed between upsert and delete")

    monkeypatch.setattr(res.index, "delete_chunks", crash)
    with pytest.raises(KeyboardInterrupt):
        core.ingest_batch(res, plan.to_process, plan.states)
    monkeypatch.undo()
    mid = snapshot(res)
    texts = " ".join(r["text"] for r in mid if r["source_uri"] == "corpus/billing/refunds.md")
    assert "five business days" in texts and "seven business days" in texts  # never unsearchable

    embedder.reset()
    ingest(prefix="corpus/")
    assert embedder.texts == [], "embeddings written before the crash are reused from the cache"
    final = snapshot(res)
    assert not any("five business days" in r["text"] for r in final)
    assert len({r["doc_hash"] for r in final if r["source_uri"] == "corpus/billing/refunds.md"}) == 1


def test_index_refuses_a_different_embedding_model(res, embedder, tmp_path):
    other = LanceIndex(res.settings.index.path, res.settings.index.name)
    other.ensure("some-other-model", 768)
    put_all(res.store, DOCS)
    with pytest.raises(IndexModelMismatch, match="some-other-model"):
        ingest(prefix="corpus/")
    assert embedder.texts == []


def test_s3_event_created_and_removed(res, embedder):
    put_all(res.store, DOCS)
    created = ingest(s3_event={"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "spotline"}, "object": {"key": "corpus/account/password.txt"}}}]})
    assert created.new == 1 and created.scanned == 1
    assert {r["source_uri"] for r in snapshot(res)} == {"corpus/account/password.txt"}
    res.store.delete("corpus/account/password.txt")
    removed = ingest(key="corpus/account/password.txt", event_name="ObjectRemoved:Delete")
    assert removed.deleted == 1 and res.index.count() == 0


async def _artifacts(flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


@pytest.mark.parametrize("params, message", [
    ({"prefix": "corpus/", "key": "corpus/a.md"}, "either prefix"),
    ({"key": "corpus/a.md", "bucket": "someone-elses-bucket"}, "someone-elses-bucket"),
    ({"key": "corpus/a.md", "event_name": "ObjectRestore:Completed"}, "unsupported event"),
    ({"s3_event": {"Records": []}}, "exactly one record"),
    ({"s3_event": {"Records": [{"s3": {"bucket": {"name": "spotline"}}}]}}, "missing field"),
    ({"key": "_spotline/quarantine/x.json"}, "own prefix"),
    ({"prefix": "_spotline/cache/"}, "own prefix"),
])
def test_malformed_requests_fail_clearly_with_an_artifact(res, embedder, params, message):
    import asyncio

    state = ingest(**params, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=message):
        state.result()
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    # rejected before any work, with an artifact that says why
    assert any(a.key == "ingest-rejected" and message in a.data for a in arts)
    assert embedder.texts == []


def test_summary_and_progress_artifacts(res, embedder):
    import asyncio

    put_all(res.store, {**DOCS, "corpus/empty.md": b""})
    state = ingest(prefix="corpus/", batch_documents=2, return_state=True)
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    by_key = {a.key: a for a in arts if a.key}
    table = json.loads(by_key["ingest-summary"].data)
    metrics = {row["metric"]: row["value"] for row in table}
    assert metrics["new"] == 4 and metrics["failed (set aside)"] == 1
    assert metrics["chunks embedded"] == len(embedder.texts)
    assert metrics["tokens embedded"] > 0
    report = {r["item"]: r for r in json.loads(by_key["ingest-run-report"].data)}
    assert report["same tokens on amazon.titan-embed-text-v2:0"]["quantity"] == f"{metrics['tokens embedded']} tokens"
    assert "$" in report["same tokens on amazon.titan-embed-text-v2:0"]["usd"]
    assert report["embedding cache"]["quantity"] == "0 chunks reused"  # a first run embeds everything
    assert json.loads(by_key["ingest-set-aside"].data) == [
        {"key": "corpus/empty.md", "reason": "empty", "detail": "0 bytes"}]
    progress = [a for a in arts if a.type == "progress"]
    assert progress and progress[0].data == 100.0


def _bulk_failure(monkeypatch, res, bad_uri_suffix, status):
    """The index writes every chunk but those of one document, which it rejects item by item,
    as OpenSearch's bulk API does (bulk_write_error builds what the OpenSearch backend raises)."""
    from spotline.index.opensearch import bulk_write_error

    real_upsert = res.index.upsert

    def upsert(records):
        good = [r for r in records if not r.source_uri.endswith(bad_uri_suffix)]
        bad = [r for r in records if r.source_uri.endswith(bad_uri_suffix)]
        real_upsert(good)
        if bad:
            raise bulk_write_error("index", len(records), [
                {"id": r.chunk_id, "status": status, "type": "mapper_parsing_exception", "reason": "bad field"}
                for r in bad])

    monkeypatch.setattr(res.index, "upsert", upsert)


def test_index_rejecting_one_document_sets_it_aside_and_keeps_the_rest(res, embedder, monkeypatch):
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    res.store.put("corpus/billing/refunds.md", DOCS["corpus/billing/refunds.md"].replace("five", "nine").encode())
    res.store.put("corpus/new.md", b"# New\n\nA brand new article about expense limits.")
    _bulk_failure(monkeypatch, res, "corpus/billing/refunds.md", 400)
    run = ingest(prefix="corpus/")
    assert run.new == 1 and run.failed == 1
    assert run.set_aside[0]["reason"] == "index-rejected" and "mapper_parsing_exception" in run.set_aside[0]["detail"]
    rows = snapshot(res)
    assert any(r["source_uri"] == "corpus/new.md" for r in rows)
    assert any("five business days" in r["text"] for r in rows), "the previous version stays searchable"
    assert not any("nine business days" in r["text"] for r in rows), "no half-written new version"
    refunds = [r for r in rows if r["source_uri"] == "corpus/billing/refunds.md"]
    assert len({r["doc_hash"] for r in refunds}) == 1


def test_index_throttling_fails_the_task_for_a_retry(res, embedder, monkeypatch):
    from spotline.errors import TransientError
    from spotline.index.opensearch import BulkWriteError

    put_all(res.store, DOCS)
    _bulk_failure(monkeypatch, res, "corpus/sso.html", 429)
    plan = core.plan_sync(res, core.list_sources(res, "corpus/"), res.store.uri("corpus/"), True)
    with pytest.raises((BulkWriteError, TransientError)) as err:
        core.ingest_batch(res, plan.to_process, plan.states)
    assert isinstance(err.value, BulkWriteError) and isinstance(err.value, TransientError)


def test_full_sync_of_a_prefix_leaves_sibling_prefixes_alone(res, embedder):
    """corpus/help/ and corpus/help-v2/ share a string prefix; a full sync of one must not touch the other."""
    put_all(res.store, {"corpus/help/a.md": "# A\n\nAlpha article.", "corpus/help-v2/b.md": "# B\n\nBeta article."})
    ingest(prefix="corpus/help-v2/")
    run = ingest(prefix="corpus/help/")
    assert run.deleted == 0
    assert {r["source_uri"] for r in snapshot(res)} == {"corpus/help/a.md", "corpus/help-v2/b.md"}


def test_pathological_and_oversized_files_are_set_aside_without_blocking(res, embedder, monkeypatch):
    put_all(res.store, DOCS)
    res.store.put("corpus/deep.json", b"[" * 200_000 + b"]" * 200_000)  # RecursionError in any JSON parser
    res.store.put("corpus/huge.txt", b"x " * 300_000)
    monkeypatch.setenv("SPOTLINE_CHUNKING__MAX_DOCUMENT_BYTES", "500000")
    from tests.conftest import use_settings

    r = use_settings(monkeypatch, res.settings.store.root.parent)
    r.__dict__["_embedder"] = embedder
    gets = []
    real_get = r.store.get
    monkeypatch.setattr(r.store, "get", lambda key: gets.append(key) or real_get(key))
    run = ingest(prefix="corpus/", batch_documents=64)
    assert run.new == 4 and run.failed == 2
    reasons = {s["key"]: s["reason"] for s in run.set_aside}
    assert reasons == {"corpus/deep.json": "corrupt", "corpus/huge.txt": "too-large"}
    assert "corpus/huge.txt" not in gets, "an oversized object is never downloaded"


def test_removed_event_for_an_object_that_exists_again_keeps_it(res, embedder):
    put_all(res.store, DOCS)
    ingest(prefix="corpus/")
    late = ingest(key="corpus/sso.html", event_name="ObjectRemoved:Delete")  # arrived after a re-upload
    assert late.deleted == 0
    assert any(r["source_uri"] == "corpus/sso.html" for r in snapshot(res))


def test_quarantine_records_of_vanished_files_are_cleared_by_a_full_sync(res, embedder):
    put_all(res.store, {**DOCS, "corpus/empty.md": b""})
    ingest(prefix="corpus/")
    assert len(list(res.store.list(core.quarantine_prefix(res)))) == 1
    res.store.delete("corpus/empty.md")
    ingest(prefix="corpus/")
    assert list(res.store.list(core.quarantine_prefix(res))) == []


def test_retried_flow_run_loads_finished_batches_instead_of_redoing_them(res, embedder, monkeypatch):
    """Same flow run, second attempt: the persisted plan and batch results are reused."""
    put_all(res.store, DOCS)
    calls = []
    real = core.ingest_batch

    def flaky(r, docs, states, run_id=None, quarantined=None):
        calls.append(tuple(d.key for d in docs))
        if len(calls) == 2:
            raise ValueError("simulated failure in batch 2")  # permanent: no task retry, the flow fails
        return real(r, docs, states, run_id=run_id, quarantined=quarantined)

    monkeypatch.setattr(core, "ingest_batch", flaky)
    run = ingest.with_options(retries=1, retry_delay_seconds=0)(prefix="corpus/", batch_documents=2)
    assert run.new == 4 and run.index_chunks == res.index.count()
    assert len(calls) == 3, calls  # batch 1 once (loaded on the retry), batch 2 twice
    assert calls[0] != calls[1] == calls[2]
