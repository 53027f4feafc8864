"""Document ingestion & embedding.

The story of a run:
1. Work out what was asked: a prefix to sync (scheduled / ad hoc) or one object from an S3
   event (created → ingest it, removed → drop it). Malformed requests, traversal or keys outside
   the source prefix are refused here, before any work: one line, an artifact, nothing persisted.
   A run that Spot interrupted too often hands itself to the on-demand pool here.
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
   time), the list of set-aside files, and the run report every flow shares (cost by model,
   cache savings, compute on Fargate Spot, interruptions survived).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import flow, get_run_logger

from runtime.artifacts import Progress, set_aside_table, summary_table
from runtime.interrupt import prompt_exit_on_sigterm, stop_here_if_interrupted
from runtime.outcomes import reject
from runtime.recovery import hand_off_if_over_budget
from runtime.report import RunReport, run_report
from runtime.results import result_storage
from runtime.writers import index_writer
from spotline.embedding.local import available_cpus
from spotline.ingestion.pipeline import Usage
from spotline.ingestion.requests import BadIngestRequest, resolve_request
from spotline.ingestion.summary import IngestSummary
from spotline.resources import get_resources
from spotline.settings import get_settings
from tasks import ingest as t


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
    keys: list[str] | None = None,
) -> IngestSummary:
    """Sync `prefix` (default: settings.ingest.source_prefix), ingest/remove one `key`, or bring
    the named `keys` up to date (what a burst of upload events asks for).

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
            allow_outside_prefix=settings.ingest.allow_outside_source_prefix, keys=keys,
        )
    except BadIngestRequest as exc:
        return reject("ingest-rejected", str(exc))
    if moved := hand_off_if_over_budget(settings.prefect.interruption_budget):
        return moved  # interrupted too often on Spot: the on-demand pool finishes it

    with prompt_exit_on_sigterm(res.release), run_report("ingest", settings.prices, vcpus=available_cpus()) as report:
        with index_writer(res.index.name, settings.ingest.writer_lease_s) as waited:
            plan, summary = _plan(req, event_name, force, res)
            summary.waited_for_writer_s = round(waited, 3)
            usage = _process(plan, batch_documents or settings.ingest.batch_documents, summary, report, res)
            summary.deleted += t.remove_documents(plan.to_delete)
            summary.index_chunks = t.finalize_index() if summary.touched_index else res.index.count()
        summary.seconds = round(time.perf_counter() - started, 3)
        _publish(summary, usage, res)
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
    elif req.mode == "keys":
        sources = t.list_sources(None, None, req.keys)
        present = {s.key for s in sources}
        removed = [res.store.uri(k) for k in req.keys if k not in present]
        # Index state only under the keys' common folder: cheap, and exact wherever the keys live.
        common = os.path.commonprefix(req.keys).rpartition("/")[0]
        plan = t.plan_sync(sources, res.store.uri(common + "/" if common else ""), False, force, removed)
        log.info("%d key(s) from events: %d present, %d removed", len(req.keys), len(present), len(removed))
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
    return plan, IngestSummary.planned(len(sources), plan)


def _process(plan, batch_documents: int, summary: IngestSummary, report: RunReport, res) -> Usage:
    """Every batch in turn; each is a task whose persisted result a resumed run reuses."""
    log = get_run_logger()
    usage = Usage()
    batches = plan.batches(batch_documents, res.settings.ingest.large_document_bytes)
    progress = Progress(len(plan.to_process), "documents processed")
    for number, batch in enumerate(batches, 1):
        stop_here_if_interrupted()  # after SIGTERM no new batch starts: the rescheduled run does it
        uris = {d.uri for d in batch}
        done = t.ingest_batch(
            number,
            batch,
            {u: s for u, s in plan.states.items() if u in uris},
            sorted(plan.quarantined & uris),
        )
        summary.add_batch(done, usage)
        embedded = sum(o.chunks_embedded for o in done.outcomes)
        report.add_embeddings(res.embedder_spec.model_id, done.usage.input_tokens, done.usage.texts,
                              cache_hits=max(done.chunks_written - embedded, 0))
        for o in done.outcomes:
            if o.status == "failed":
                log.warning("set aside %s: %s (%s)", o.key, o.reason, o.detail)
        progress.advance(len(batch))
        log.info("batch %d/%d: %d chunks written, %d embedded", number, len(batches), done.chunks_written, embedded)
    if summary.failed:
        log.warning("%d document(s) set aside: see the 'ingest-set-aside' artifact", summary.failed)
    return usage


def _publish(summary: IngestSummary, usage: Usage, res) -> None:
    for item in summary.legacy_encodings:
        get_run_logger().info("decoded %s as %s (not UTF-8)", item["key"], item["encoding"])
    summary_table("ingest-summary", summary.rows(usage), f"Ingestion summary into index {res.index.name!r}")
    set_aside_table("ingest-set-aside", summary.set_aside, "documents")
    if summary.legacy_encodings:
        summary_table("ingest-encodings", summary.legacy_encodings,
                      f"{len(summary.legacy_encodings)} document(s) were not UTF-8 and were decoded as detected")


if __name__ == "__main__":
    print(ingest().model_dump_json(indent=2))
