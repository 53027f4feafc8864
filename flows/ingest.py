"""Document ingestion & embedding.

The story of a run:
1. Work out what was asked: a prefix to sync (scheduled / ad hoc) or one object from an S3
   event (created → ingest it, removed → drop it). Malformed requests, traversal or keys outside
   the source prefix are refused here, before any work: one line, an artifact, nothing persisted.
   Then take the index's writer slot: runs over one index take turns, so an overlapping run plans
   from what the previous one wrote. From here on a SIGTERM ends the process within seconds.
2. List the sources and compare them with what the index already holds (version + content hash
   per document). Unchanged documents cost nothing: no reads, no embeddings.
3. Process new and changed documents in batches: parse, chunk by the model's own tokens, embed
   only chunks whose text is new (the embedding cache remembers the rest), write new chunks,
   then remove stale ones. Bad files are set aside with a reason; the batch goes on. Large
   documents come last, each its own unit, streamed through in slices.
4. On a full sync, remove documents that disappeared from the source.
5. Report: a progress bar while it runs, then a summary table (documents, chunks, tokens,
   time, cost) and the list of set-aside files.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from spotline.costs import compute_cost, embedding_cost, usd
from spotline.events import BadIngestRequest, resolve_request
from spotline.ingest import Usage
from runtime.interrupt import prompt_exit_on_sigterm
from runtime.outcomes import reject
from runtime.writers import index_writer
from spotline.resources import get_resources
from spotline.settings import get_settings
from tasks import ingest as t
from tasks.reporting import Progress, set_aside_table, summary_table
from tasks.results import result_storage


class IngestSummary(BaseModel):
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks_embedded: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    embedding_texts: int = 0
    embedding_tokens: int = 0
    index_chunks: int = 0
    duplicates_removed: int = 0
    waited_for_writer_s: float = 0.0
    seconds: float = 0.0
    set_aside: list[dict[str, Any]] = []
    legacy_encodings: list[dict[str, str]] = []


@flow(
    name="ingest-documents",
    description="Parse, chunk, embed and index documents from the object store, incrementally.",
    persist_result=True,
    result_storage=result_storage(get_settings()),
)
def ingest(
    prefix: str | None = None,
    key: str | None = None,
    bucket: str | None = None,
    event_name: str | None = None,
    s3_event: dict[str, Any] | None = None,
    full_sync: bool | None = None,
    force: bool = False,
    batch_documents: int | None = None,
) -> IngestSummary:
    """Sync `prefix` (default: settings.ingest.source_prefix), or ingest/remove one `key`.

    `force` re-processes unchanged documents (after a chunking change); cached embeddings keep it cheap.
    """
    started = time.perf_counter()
    res = get_resources()
    settings = res.settings
    try:
        req = resolve_request(
            prefix, key, bucket, event_name, s3_event, full_sync,
            configured_bucket=settings.store.bucket, default_prefix=settings.ingest.source_prefix,
            system_prefix=settings.store.system_prefix,
            allow_outside_prefix=settings.ingest.allow_outside_source_prefix,
        )
    except BadIngestRequest as exc:
        return reject("ingest-rejected", str(exc))

    with prompt_exit_on_sigterm(res.release):
        with index_writer(res.index.name, settings.ingest.writer_lease_s) as waited:
            plan, summary = _plan(req, event_name, force, res)
            summary.waited_for_writer_s = round(waited, 3)
            usage = _process(plan, batch_documents or settings.ingest.batch_documents, summary, settings)
            summary.deleted += t.remove_documents(plan.to_delete)
            if summary.chunks_written or summary.chunks_deleted or summary.deleted or summary.duplicates_removed:
                summary.index_chunks = t.finalize_index()
            else:
                summary.index_chunks = res.index.count()
        summary.embedding_texts, summary.embedding_tokens = usage.texts, usage.input_tokens
        summary.seconds = round(time.perf_counter() - started, 3)
        _report(summary, usage, res)
    return summary


def _plan(req, event_name: str | None, force: bool, res) -> tuple[Any, IngestSummary]:
    log = get_run_logger()
    if req.mode == "key":
        # The object's current state decides, not the event's name: events arrive out of order,
        # and a Removed event for a key that exists again must not delete it.
        sources = t.list_sources(None, req.key)
        removed = [] if sources else [res.store.uri(req.key)]
        plan = t.plan_sync(sources, res.store.uri(req.key), False, force, removed)
        log.info("event %s for %s: %s", event_name or "(none)", req.key, "remove" if removed else "ingest")
    else:
        sources = t.list_sources(req.prefix, None)
        plan = t.plan_sync(sources, res.store.uri(req.prefix), req.full_sync, force, [])
    log.info(
        "%d sources: %d to process, %d unchanged, %d to delete",
        len(sources), len(plan.to_process), len(plan.unchanged), len(plan.to_delete),
    )
    if plan.repaired:
        log.warning("removed %d duplicate chunk row(s); re-indexing %d document(s)",
                    plan.duplicates_removed, len(plan.repaired))
    summary = IngestSummary(scanned=len(sources), unchanged=len(plan.unchanged),
                            duplicates_removed=plan.duplicates_removed)
    return plan, summary


def _process(plan, batch_documents: int, summary: IngestSummary, settings) -> Usage:
    """Every batch in turn; each is a task whose persisted result a resumed run reuses."""
    log = get_run_logger()
    usage = Usage()
    batches = plan.batches(batch_documents, settings.ingest.large_document_bytes)
    progress = Progress(len(plan.to_process), "documents processed")
    for number, batch in enumerate(batches, 1):
        uris = {d.uri for d in batch}
        report = t.ingest_batch(
            number,
            batch,
            {u: s for u, s in plan.states.items() if u in uris},
            sorted(plan.quarantined & uris),
        )
        for o in report.outcomes:
            setattr(summary, o.status, getattr(summary, o.status) + 1)
            summary.chunks_embedded += o.chunks_embedded
            if o.status == "failed":
                summary.set_aside.append({"key": o.key, "reason": o.reason, "detail": o.detail})
                log.warning("set aside %s: %s (%s)", o.key, o.reason, o.detail)
            elif o.encoding and o.encoding not in ("utf-8", "utf-8-sig", "ascii"):
                summary.legacy_encodings.append({"key": o.key, "encoding": o.encoding})
                log.info("decoded %s as %s (not UTF-8)", o.key, o.encoding)
        summary.chunks_written += report.chunks_written
        summary.chunks_deleted += report.chunks_deleted
        usage.add(report.usage)
        progress.advance(len(batch))
        log.info("batch %d/%d: %d chunks written, %d embedded", number, len(batches), report.chunks_written,
                 sum(o.chunks_embedded for o in report.outcomes))
    if summary.failed:
        log.warning("%d document(s) set aside: see the 'ingest-set-aside' artifact", summary.failed)
    return usage


def _report(summary: IngestSummary, usage: Usage, res) -> None:
    prices = res.settings.prices
    model = res.embedder_spec.model_id
    reference = prices.reference_embedding_model
    rows = [
        {"metric": "documents scanned", "value": summary.scanned},
        {"metric": "new", "value": summary.new},
        {"metric": "changed", "value": summary.changed},
        {"metric": "unchanged", "value": summary.unchanged},
        {"metric": "deleted", "value": summary.deleted},
        {"metric": "failed (set aside)", "value": summary.failed},
        {"metric": "chunks embedded", "value": summary.chunks_embedded},
        {"metric": "chunks written / deleted", "value": f"{summary.chunks_written} / {summary.chunks_deleted}"},
        {"metric": "chunks in index", "value": summary.index_chunks},
        {"metric": "duplicate chunk rows repaired", "value": summary.duplicates_removed},
        {"metric": "decoded from a legacy encoding", "value": len(summary.legacy_encodings)},
        {"metric": "waited for the index writer slot (s)", "value": summary.waited_for_writer_s},
        {"metric": "embedding requests", "value": usage.requests},
        {"metric": "tokens embedded", "value": usage.input_tokens},
        {"metric": "throttled requests", "value": usage.throttled},
        {"metric": "wall time (s)", "value": summary.seconds},
        {"metric": f"embedding cost ({model})", "value": usd(embedding_cost(prices, model, usage.input_tokens))},
        {"metric": f"same tokens on {reference}", "value": usd(embedding_cost(prices, reference, usage.input_tokens))},
        {"metric": "compute on Fargate Spot (1 vCPU)", "value": usd(compute_cost(prices, summary.seconds))},
    ]
    summary_table("ingest-summary", rows, f"Ingestion summary into index {res.index.name!r}")
    set_aside_table("ingest-set-aside", summary.set_aside, "documents")
    if summary.legacy_encodings:
        summary_table("ingest-encodings", summary.legacy_encodings,
                      f"{len(summary.legacy_encodings)} document(s) were not UTF-8 and were decoded as detected")


if __name__ == "__main__":
    print(ingest().model_dump_json(indent=2))
