"""One writer per index at a time, enforced by the Prefect server, taken by the flow itself.

Two ingest runs over one index (a nightly full sync and an event-triggered run, or two operators)
would otherwise plan from the same state and race each other's writes. Serialising whole runs,
planning included, means the second run plans from what the first one wrote: it finds the work
done and does nothing. The limit is created (or put back to 1 and active) by the flow on every
run, so it never depends on a deployment setting or on someone having set it up in the UI.

The slot is held under a lease that a background thread renews, so a run killed with SIGKILL
frees it when the lease runs out (`ingest.writer_lease_s`, at least Prefect's minimum of 60 s).
But a server keeps leases in memory by default: a server restart, or Prefect's temporary server
dying with the CLI, forgets the lease while the slot count survives in the database, and the slot
would stay taken for ever. So the holder also records itself (flow run, host, pid, lease) in a
Prefect variable, and a run that waits checks that record: when the holding process is gone from
this host, or its flow run has ended, the slot is stale and is freed, with a warning in the log.

The index backend keeps its own guard too (LanceDB writes take a file lock; OpenSearch ids are
deterministic), so even a wrongly freed slot cannot duplicate rows; this limit is what makes
overlapping runs do no redundant work and plan from the truth.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import re
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator
from uuid import UUID

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

POLL_S = 30.0  # how often a waiting run checks whether the slot's holder is still alive, and says it waits


def _drop_wait_timeouts(record: logging.LogRecord) -> bool:
    """Prefect logs an ERROR from its acquisition service whenever a wait with a timeout runs out."""
    return not ("ConcurrencySlotAcquisitionWithLeaseService" in record.getMessage()
                and "TimeoutError" in record.getMessage())


def writer_limit_name(index_name: str) -> str:
    return f"spotline-index-{index_name}"


def _record_name(limit: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", limit.lower()) + "-holder"  # Prefect variable names


def ensure_writer_limit(name: str) -> None:
    """Create the limit with one slot, or put an edited / deactivated one back to one active slot."""
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


def _read_record(client, limit: str) -> dict[str, Any] | None:
    value = client.read_variable_by_name(_record_name(limit))
    return value.value if value is not None and isinstance(value.value, dict) else None


def _write_record(client, limit: str, record: dict[str, Any]) -> None:
    """Create or replace the holder record; a stale record may vanish between our read and our write.

    The previous holder deletes its record as it gives the slot back, and this run may already hold
    the slot by then, so "exists" can turn into "not found" under our feet: try again from the top.
    """
    name = _record_name(limit)
    for _ in range(5):
        try:
            client.create_variable(VariableCreate(name=name, value=record))
            return
        except ObjectAlreadyExists:  # a stale record: ours replaces it
            pass
        try:
            client.update_variable(VariableUpdate(name=name, value=record))
            return
        except httpx.HTTPStatusError as exc:  # Prefect's client raises a bare 404 here
            if exc.response.status_code != 404:
                raise
    raise RuntimeError(f"could not write the writer record {name!r}: it kept appearing and vanishing")


def _delete_record_if(client, limit: str, record: dict[str, Any]) -> None:
    if _read_record(client, limit) == record:
        try:
            client.delete_variable_by_name(_record_name(limit))
        except ObjectNotFound:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, but another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A zombie answers kill(0) but writes nothing: an exited flow process whose parent has not reaped
    # it yet (a container whose PID 1 never reaps, a supervisor still in its grace period).
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _why_stale(client, record: dict[str, Any]) -> str | None:
    """Why the recorded holder can no longer be writing, or None when it may still be."""
    if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", 0))):
        return f"its process ({record.get('pid')}) on this host is gone"
    try:
        run = client.read_flow_run(UUID(record["flow_run_id"]))
    except (ObjectNotFound, KeyError, ValueError):
        return "its flow run no longer exists"
    if run.state is not None and run.state.is_final():
        return f"its flow run ended {run.state.name}"
    return None


def free_if_stale(limit: str) -> str | None:
    """Free the slot when its recorded holder is dead; returns why it was freed, or None."""
    with get_client(sync_client=True) as client:
        record = _read_record(client, limit)
        if record is None:
            return None  # nothing to judge by (a holder that has not written its record yet)
        why = _why_stale(client, record)
        if why is None:
            return None
        try:
            release_concurrency_slots_with_lease(UUID(record["lease_id"]))  # the server may still know the lease
        except Exception:  # noqa: BLE001 - an unknown lease is the case handled next
            pass
        current = client.read_global_concurrency_limit_by_name(limit)
        if current.active_slots > 0 and _read_record(client, limit) == record:
            # The server had forgotten the lease (restarted, or a temporary server): the count is stale.
            client.update_global_concurrency_limit(limit, GlobalConcurrencyLimitUpdate(active_slots=0))
        _delete_record_if(client, limit, record)
        return f"held by flow run {record.get('flow_run_id')}, but {why}"


@contextmanager
def index_writer(index_name: str, lease_s: float) -> Iterator[float]:
    """Hold the index's writer slot for the body; yields the seconds spent waiting for it."""
    name = writer_limit_name(index_name)
    lease_s = max(lease_s, 60.0)  # the server refuses shorter leases
    ensure_writer_limit(name)
    log = get_run_logger()
    run = FlowRunContext.get()
    run_id = run.flow_run.id if run and run.flow_run else None
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None  # shown on the UI's page
    started = time.monotonic()
    log.info("taking the writer slot %r (one ingest run per index at a time)", name)
    freed = free_if_stale(name)  # a slot left by a dead run is noticed at once, not after a wait
    if freed:
        log.warning("freed the stale writer slot %r: %s", name, freed)
    quiet = logging.getLogger("prefect._internal.concurrency")
    quiet.addFilter(_drop_wait_timeouts)  # a timed-out wait is how we poll, not an error
    try:
        while True:
            try:
                lease = acquire_concurrency_slots_with_lease(
                    [name], 1, timeout_seconds=POLL_S, lease_duration=lease_s, strict=True, holder=holder
                )
                break
            except TimeoutError:
                freed = free_if_stale(name)
                if freed:
                    log.warning("freed the stale writer slot %r: %s", name, freed)
                else:
                    log.info("still waiting for the writer slot %r (%.0f s); if no ingest run is active, free it "
                             "on the Concurrency page", name, time.monotonic() - started)
    finally:
        quiet.removeFilter(_drop_wait_timeouts)
    waited = time.monotonic() - started
    if waited >= 1.0:
        log.info("waited %.1f s for another run to finish writing index %r", waited, index_name)
    record = {"flow_run_id": str(run_id), "host": socket.gethostname(), "pid": os.getpid(),
              "lease_id": str(lease.lease_id), "since": datetime.now(timezone.utc).isoformat()}
    try:
        with get_client(sync_client=True) as client:
            _write_record(client, name, record)
        # A renewal hiccup must not cancel the run mid-write: the backend's own lock still holds.
        with maintain_concurrency_lease(lease.lease_id, lease_s, raise_on_lease_renewal_failure=False):
            yield waited
    finally:
        # Record first, slot second: once the slot is free the next holder writes its own record.
        # Each step on its own: a record we could not delete must not keep the slot taken.
        try:
            with get_client(sync_client=True) as client:
                _delete_record_if(client, name, record)
        except Exception as exc:  # noqa: BLE001 - never mask why the body ended; the next holder overwrites it
            log.warning("could not remove the writer record of %r (%s); the next holder replaces it", name, exc)
        try:
            release_concurrency_slots_with_lease(lease.lease_id)
        except Exception as exc:  # noqa: BLE001 - never mask why the body ended; the next run frees it
            log.warning("could not give back the writer slot %r (%s); the next run will free it", name, exc)
