"""Interrupted runs come back by themselves, within a budget, without looping.

Three ways a run is interrupted, one accounting:
- SIGTERM (Spot's two-minute notice): `prefect flow-run execute` puts the same flow run back to
  Scheduled (state ``AwaitingRetry``) and a worker starts it again; finished tasks load their
  persisted results (Cached) instead of running.
- SIGKILL, a lost host: the flow stops sending heartbeats; the ``spotline-heartbeat-lost``
  automation marks it Crashed after three missed intervals.
- any Crash of a recoverable run: the ``spotline-recover`` automation starts the
  ``recover-interrupted`` flow, which calls :func:`recover` here.

Every interruption is read back from the flow run's own state history (no counter to lose), and
:func:`decide` alone turns the count into an action:
- fewer than ``interruption_budget`` on the main (Spot) pool: resume the same flow run id;
- at the budget: re-submit on the on-demand pool (the deployment's ``-ondemand`` twin) and cancel
  this run with a message naming the new one; a run restarted by SIGTERM checks this itself at
  its start (:func:`hand_off_if_over_budget`), since no crash event precedes it;
- on the on-demand pool, more than ``fallback_budget`` crashes: stop. The run ends Failed with a
  message saying why; nothing reschedules it again. This is the loop PrefectHQ/prefect#10211
  describes (an automation that reschedules every Crashed run forever), closed by construction.

An automation can miss a crash, so a sweep backs it up (:func:`missed_crashes`, the
``recover-missed`` deployment). Seen on 2026-12-02 on a local server under load: the triggers
service hit SQLite's ``database is locked`` four times in 0.3 s on one flow run's AwaitingRetry
event and moved that event to its dead-letter queue. Every later event of that run names the one
before it (``follows``), so Prefect's causal ordering held them all, the Crashed event included,
for its 15-minute lookback. No recovery started. The sweep finds recoverable runs that have been
Crashed for longer than a grace period and recovers them the same way. :func:`recover` acts only
on a run that is Crashed at that moment, and :func:`decide` counts from the state history, so a run
that both the automation and the sweep reach is still handled once per crash, within its budget.
"""

from __future__ import annotations

from spotline.errors import brief
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, StateType

Action = Literal["resume", "fallback", "give-up"]
RESCHEDULED = "AwaitingRetry"  # the state name `flow-run execute` proposes on SIGTERM
# Names the deployment catalog uses for what recovery touches.
FALLBACK_SUFFIX = "-ondemand"  # a recoverable deployment's twin on the fallback pool
RECOVERABLE_TAG = "spotline-recoverable"  # the automations act only on runs that carry it
FALLBACK_TAG = "spotline-fallback"  # runs on the fallback pool carry it


@dataclass(frozen=True)
class Interruption:
    at: datetime
    kind: Literal["rescheduled", "crashed"]
    work_lost_s: float  # from the last task result persisted in that attempt (or its start) to the stop
    message: str = ""


def interruptions(client: SyncPrefectClient, flow_run_id: uuid.UUID) -> list[Interruption]:
    """Every time this flow run stopped without finishing: SIGTERM reschedules and crashes."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterState, TaskRunFilterStateType

    from runtime.history import task_runs_of

    states = sorted(client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)
    tasks = task_runs_of(client, flow_run_id, TaskRunFilter(
        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED]))))
    # A task that loaded its result from cache did no work in this attempt: only real completions
    # mark progress saved.
    done = sorted(t.end_time for t in tasks if t.end_time and (t.state_name or "") != "Cached")
    found: list[Interruption] = []
    running_since = None
    for prev, state in zip([None, *states], states):
        if state.type == StateType.RUNNING:
            running_since = state.timestamp
            continue
        crashed = state.type == StateType.CRASHED
        rescheduled = (state.type == StateType.SCHEDULED and state.name == RESCHEDULED
                       and prev is not None and prev.type == StateType.RUNNING)
        if not (crashed or rescheduled):
            continue
        start = running_since or state.timestamp
        last = max((t for t in done if start <= t <= state.timestamp), default=start)
        found.append(Interruption(at=state.timestamp, kind="crashed" if crashed else "rescheduled",
                                  work_lost_s=round(max((state.timestamp - last).total_seconds(), 0.0), 1),
                                  message=brief(state.message or "")))
        running_since = None
    return found


def on_fallback(run: FlowRun) -> bool:
    return FALLBACK_TAG in (run.tags or [])


def decide(count: int, fallback: bool, budget: int, fallback_budget: int) -> Action:
    """What to do with a run interrupted ``count`` times (the count includes the latest one)."""
    if fallback:
        return "resume" if count <= fallback_budget else "give-up"
    return "resume" if count < budget else "fallback"


@dataclass
class Outcome:
    action: Action | Literal["ignored"]
    message: str
    new_run_id: uuid.UUID | None = None


def recover(client: SyncPrefectClient, flow_run_id: uuid.UUID, budget: int, fallback_budget: int) -> Outcome:
    """Act on one crashed run (idempotent: a run no longer Crashed is left alone)."""
    from prefect.states import Cancelled, Failed, Scheduled

    run = client.read_flow_run(flow_run_id)
    if run.state is None or run.state.type != StateType.CRASHED:
        return Outcome("ignored", f"flow run {run.name} is {run.state.name if run.state else 'stateless'}, not Crashed")
    if run.deployment_id is None:
        return Outcome("ignored", f"flow run {run.name} has no deployment: no worker could resume it")
    count = len(interruptions(client, flow_run_id))
    fallback = on_fallback(run)
    action = decide(count, fallback, budget, fallback_budget)
    if action == "resume":
        message = (f"Spotline: resumed after interruption {count} ({'on-demand' if fallback else 'Spot'} budget "
                   f"{fallback_budget if fallback else budget}); finished tasks load their saved results")
        client.set_flow_run_state(flow_run_id, Scheduled(name=RESCHEDULED, message=message))
        return Outcome("resume", message)
    if action == "fallback":
        new, message = _hand_off(client, run, count)
        client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
        return Outcome("fallback", message, new.id)
    last = brief(run.state.message or "no message")
    message = (f"Spotline: crashed {count} times on the on-demand pool (budget {fallback_budget}), after its Spot "
               f"budget of {budget}; not retried again. Looks like a bug, not a preemption. Last crash: {last}")
    client.set_flow_run_state(flow_run_id, Failed(message=message), force=True)
    return Outcome("give-up", message)


def missed_crashes(client: SyncPrefectClient, grace_s: float, horizon: timedelta,
                   now: datetime | None = None, limit: int = 200) -> list[FlowRun]:
    """Recoverable runs still Crashed ``grace_s`` after their crash, newest first: no recovery
    reached them. Crashes older than ``horizon`` are left alone."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
                                                FlowRunFilterTags)
    from prefect.client.schemas.sorting import FlowRunSort

    now = now or datetime.now(timezone.utc)
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[RECOVERABLE_TAG]),
                                      state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit,
    )
    earliest, latest = now - horizon, now - timedelta(seconds=grace_s)
    return [r for r in runs if r.state is not None and earliest <= r.state.timestamp <= latest]


def _hand_off(client: SyncPrefectClient, run: FlowRun, count: int) -> tuple[FlowRun, str]:
    """Re-submit the run on the on-demand pool; returns the new run and the message that names it."""
    new = _submit_fallback(client, run)
    return new, (f"Spotline: interrupted {count} times on the Spot pool; continues as flow run {new.name} "
                 f"({new.id}) on the on-demand pool")


def _submit_fallback(client: SyncPrefectClient, run: FlowRun) -> FlowRun:
    deployment = client.read_deployment(run.deployment_id)
    flow = client.read_flow(run.flow_id)
    twin = client.read_deployment_by_name(f"{flow.name}/{deployment.name}{FALLBACK_SUFFIX}")
    # The idempotency key makes a repeated recovery of the same run return the same new run.
    return client.create_flow_run_from_deployment(
        twin.id, parameters=run.parameters, tags=[*(t for t in run.tags or [] if not t.startswith("resumes:")),
                                                  f"resumes:{run.id}"],
        idempotency_key=f"spotline-fallback-{run.id}",
    )


def hand_off_if_over_budget(budget: int) -> Any | None:
    """At the start of a flow run: if this run (restarted after SIGTERM) has used its Spot budget,
    re-submit it on the on-demand pool and return the Cancelled state the flow should return."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment, flow_run
    from prefect.states import Cancelled

    if not flow_run.id or not deployment.id:  # an ad-hoc run: no worker would start a twin for it
        return None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(flow_run.id))
        if on_fallback(run):
            return None
        count = len(interruptions(client, run.id))
        if decide(count, False, budget, 0) != "fallback":
            return None
        _, message = _hand_off(client, run, count)
    return Cancelled(message=message)
