"""One writer per index at a time, enforced by the Prefect server, taken by the flow itself.

Two ingest runs over one index (a nightly full sync and an event-triggered run, or two operators)
would otherwise plan from the same state and race each other's writes. Serialising whole runs,
planning included, means the second run plans from what the first one wrote: it finds the work
done and does nothing. The limit is created (or put back to 1 and active) by the flow on every
run, so it never depends on a deployment setting or on someone having set it up in the UI.

The slot is held under a lease that a background thread renews: a run killed with SIGKILL frees
it when the lease runs out (`ingest.writer_lease_s`), not never. The index backend keeps its own
guard too (LanceDB writes take a file lock; OpenSearch ids are deterministic), so a run without a
server slot still cannot duplicate rows; this limit is what makes overlapping runs do no
redundant work and plan from the truth.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.context import FlowRunContext
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def writer_limit_name(index_name: str) -> str:
    return f"spotline-index-{index_name}"


def ensure_writer_limit(name: str) -> None:
    """Create the limit with one slot, or put an edited / deactivated one back to one active slot."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
            except ObjectAlreadyExists:  # another run created it between our read and our create
                pass
            return
        if existing.limit != 1 or not existing.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))


@contextmanager
def index_writer(index_name: str, lease_s: float) -> Iterator[float]:
    """Hold the index's writer slot for the body; yields the seconds spent waiting for it."""
    name = writer_limit_name(index_name)
    ensure_writer_limit(name)
    log = get_run_logger()
    started = time.monotonic()
    log.info("taking the writer slot %r (one ingest run per index at a time)", name)
    holder = None
    run = FlowRunContext.get()
    if run and run.flow_run:  # the UI's Concurrency page then shows which run holds the slot
        holder = ConcurrencyLeaseHolder(type="flow_run", id=run.flow_run.id)
    # A renewal hiccup must not cancel the run mid-write: the backend's own lock still holds.
    with concurrency(name, occupy=1, strict=True, lease_duration=lease_s, holder=holder,
                     raise_on_lease_renewal_failure=False):
        waited = time.monotonic() - started
        if waited >= 1.0:
            log.info("waited %.1f s for another run to finish writing index %r", waited, index_name)
        yield waited
