"""Spread work over flow runs of a deployment: one Fargate (Spot) task per piece in aws.

Why flow runs and not tasks: a task runs in its parent's process, so a thousand prompts or a
large backfill would share one container and die with it. A flow run of a deployment is its own
container on the work pool, with its own Spot interruption, recovery and retries. The parent
waits for all of them and reads what each finished from the object store, so a piece that failed
costs only itself.

Each piece gets an idempotency key (parent run + piece): a parent that is itself interrupted and
resumed finds its children again instead of starting them twice. Run outside a deployment
(a script, a test, `python flows/...py`) the pieces run in-process as subflows, one after another:
the same code path, no work pool needed. The swarm uses this; the ingest flow can use it to spread
a large backfill the same way.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

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


def fan_out(deployment: str, pieces: dict[str, dict[str, Any]], in_process: Callable[..., Any],
            max_parallel: int = 32, timeout_s: float | None = None) -> list[Piece]:
    """Run ``in_process(**parameters)`` for every piece: as runs of ``deployment`` ("flow/deployment")
    when this run is deployed, else in-process. Returns each piece's outcome; never raises for a
    failed piece (the caller aggregates what finished)."""
    log = get_run_logger()
    ctx = FlowRunContext.get()
    parent = str(ctx.flow_run.id) if ctx and ctx.flow_run else "local"
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
        state = run.state
        return Piece(key, state.name if state else "Unknown", str(run.id), (state.message or "") if state else "")

    log.info("fanning out %d piece(s) over %s", len(pieces), deployment)
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(pieces)))) as pool:
        return list(pool.map(one, pieces.items()))
