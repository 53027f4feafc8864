"""Ingestion's units of retryable work. Each wraps one step of spotline.ingest.

Retries apply to transient failures (network, throttling, a busy index); configuration errors
such as a mixed-model index fail at once. A batch is many documents, never one task per chunk.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from spotline import ingest as core
from spotline.events import BadIngestRequest
from spotline.index.base import IndexModelMismatch
from spotline.models import DocumentState, ObjectInfo
from spotline.resources import get_resources

PERMANENT = (IndexModelMismatch, BadIngestRequest, ValueError, TypeError, AssertionError)


def _transient(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT)


RETRY = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=_transient,
)


# Listing and planning are cached per flow run (inputs + flow run id) and persisted: a retried or
# resumed flow run replays the same plan, so its finished batches are cache hits instead of redone.
@task(name="list-sources", persist_result=True, **RETRY)
def list_sources(prefix: str | None, key: str | None) -> list[ObjectInfo]:
    return core.list_sources(get_resources(), prefix=prefix, key=key)


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
