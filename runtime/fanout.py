"""Spread work over flow runs of a deployment: one Fargate (Spot) task per piece in aws.

Why flow runs and not tasks: a task runs in its parent's process, so a thousand prompts or a
large backfill would share one container and die with it. A flow run of a deployment is its own
container on the work pool, with its own Spot interruption, recovery and retries. The parent
waits for all of them and reads what each finished from the object store, so a piece that failed
costs only itself.

Each piece gets an idempotency key (parent run + piece): a parent that is itself interrupted and
resumed finds its children again instead of starting them twice. A child that crashes (Spot took
its task) is not given up at once: the recovery automation puts the same run back (or moves it to
the on-demand pool: the old run Cancelled, a new one tagged ``resumes:<id>``), so the parent
follows it until it completes or fails, or stays down longer than ``patience_s``. Run outside a deployment
(a script, a test, `python flows/...py`) the pieces run in-process as subflows, one after another:
the same code path, no work pool needed. The swarm uses this; the ingest flow can use it to spread
a large backfill the same way.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable
from uuid import UUID

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.states import State


@dataclass
class Piece:
    key: str  # unique within the parent run: "shard-003"
    state: str  # the child run's final state name (Completed, Failed, Crashed...)
    flow_run_id: str | None
    message: str = ""


def deployed() -> bool:
    """Is this flow run running from a deployment (so children can be deployment runs too)?"""
    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.deployment_id)


def settle(flow_run_id: UUID, patience_s: float, poll_s: float = 2.0):
    """The child run once recovery is done with it: Completed or Failed, or Crashed / Cancelled with
    no comeback within ``patience_s`` (then that state)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    down_since: float | None = None
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            state = run.state
            if state is not None and state.is_cancelled():
                successor = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"resumes:{flow_run_id}"])), limit=1)
                if successor:  # moved to the on-demand pool: follow the new run
                    flow_run_id, down_since = successor[0].id, None
                    continue
            if state is not None and state.is_final() and not (state.is_crashed() or state.is_cancelled()):
                return run
            if state is not None and (state.is_crashed() or state.is_cancelled()):
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > patience_s:
                    return run
            else:
                down_since = None  # rescheduled or running again
            time.sleep(poll_s)


def fan_out(deployment: str, pieces: dict[str, dict[str, Any]], in_process: Callable[..., Any],
            max_parallel: int = 32, timeout_s: float | None = None, patience_s: float = 480.0,
            key: str | None = None) -> list[Piece]:
    """Run ``in_process(**parameters)`` for every piece: as runs of ``deployment`` ("flow/deployment")
    when this run is deployed, else in-process. Returns each piece's outcome; never raises for a
    failed piece (the caller aggregates what finished). ``key`` names the parent in the children's
    idempotency keys (default: this flow run's id; a run that continues another passes that one's)."""
    log = get_run_logger()
    ctx = FlowRunContext.get()
    parent = key or (str(ctx.flow_run.id) if ctx and ctx.flow_run else "local")
    if not deployed():
        done = []
        for key, params in pieces.items():
            state: State = in_process(**params, return_state=True)
            done.append(Piece(key, state.name, None, state.message or ""))
        return done

    def one(item: tuple[str, dict[str, Any]]) -> Piece:
        key, params = item
        run = run_deployment(name=deployment, parameters=params, idempotency_key=f"{parent}:{key}",
                             timeout=timeout_s, as_subflow=True, tags=["fan-out"])
        if run.state is not None and (run.state.is_crashed() or run.state.is_cancelled()):
            run = settle(run.id, patience_s)
        state = run.state
        return Piece(key, state.name if state else "Unknown", str(run.id), (state.message or "") if state else "")

    log.info("fanning out %d piece(s) over %s", len(pieces), deployment)
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(pieces)))) as pool:
        # Each thread runs in a copy of this run's context: run_deployment(as_subflow=True) links
        # the children to this flow run only when it can see it.
        futures = [pool.submit(contextvars.copy_context().run, one, item) for item in pieces.items()]
        return [f.result() for f in futures]
