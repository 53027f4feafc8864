"""Ingestion's units of retryable work. Each wraps one step of spotline.ingestion.pipeline.

Retries follow runtime.retry: transient failures (network, throttling, a busy index) are retried;
permanent ones such as a mixed-model index fail at once. A batch is many documents, never one task per chunk.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from spotline.ingestion import pipeline as core
from spotline.index.records import DocumentState
from spotline.storage.base import ObjectInfo
from spotline.resources import get_resources
from runtime.retry import retry_policy

RETRY = retry_policy()


# Listing and planning are cached per flow run (inputs + flow run id) and persisted: a retried or
# resumed flow run replays the same plan, so its finished batches are cache hits instead of redone.
@task(name="list-sources", persist_result=True, **RETRY)
def list_sources(prefix: str | None, key: str | None, keys: list[str] | None = None) -> list[ObjectInfo]:
    return core.list_sources(get_resources(), prefix=prefix, key=key, keys=keys)


@task(name="plan-sync", persist_result=True, **RETRY)
def plan_sync(
    sources: list[ObjectInfo], uri_prefix: str | None, full_sync: bool, force: bool, removed_uris: list[str]
) -> core.SyncPlan:
    return core.plan_sync(get_resources(), sources, uri_prefix, full_sync, force, removed_uris)


@task(
    name="ingest-batch",
    task_run_name="ingest-batch-{number}",
    tags=["spotline-index-write"],
    persist_result=True,  # default cache policy (inputs + source + flow run): a resumed run skips done batches
    **RETRY,
)
def ingest_batch(
    number: int, docs: list[ObjectInfo], states: dict[str, DocumentState], quarantined: list[str]
) -> core.BatchReport:
    return core.ingest_batch(get_resources(), docs, states, run_id=str(flow_run.id), quarantined=set(quarantined))


@task(name="remove-documents", cache_policy=NO_CACHE, tags=["spotline-index-write"], **RETRY)
def remove_documents(uris: list[str]) -> int:
    return core.remove_documents(get_resources(), uris)


@task(name="finalize-index", cache_policy=NO_CACHE, **RETRY)
def finalize_index() -> int:
    index = get_resources().index
    index.finalize()
    return index.count()
