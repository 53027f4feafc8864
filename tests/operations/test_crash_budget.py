"""Crashes end to end, on a real Prefect server with the automations and real process workers
(`prefect flow-run execute`): a run that crashes on every attempt ends after its budget instead of
looping, and a crash that no automation ever sees is still recovered by the sweep.

Why the sweep exists: on 2026-12-02 this proof failed in CI, and under load here, because the
server's triggers service hit SQLite's `database is locked` four times on one AwaitingRetry event
and dead-lettered it; Prefect's causal ordering then held every later event of that run, the Crashed
event included, for 15 minutes (runtime/recovery.py has the account). The stack here sweeps every
minute with a 30 s grace (tests/operations/conftest.py).
"""

from __future__ import annotations

import time

import pytest

from deployments.automations import RECOVER
from runtime.recovery import RESCHEDULED
from tests.operations.conftest import states_of

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def crashing(stack):
    """The always-crashes deployment and its on-demand twin, as the catalog would make them."""
    from deployments.apply import apply_deployment
    from deployments.catalog import Deployment, fallback_twin

    crashing = Deployment(name="always-crashes", entrypoint="tests/operations/crashing_flow.py:always_crashes",
                          description="test: crashes on every attempt")
    with stack.client() as client:
        apply_deployment(client, crashing, "local")
        apply_deployment(client, fallback_twin(crashing), "local")
    return "always-crashes/always-crashes"


@pytest.mark.timeout(600)
def test_a_run_that_crashes_every_time_stops_after_its_budget_with_the_reason(stack, crashing):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.deployments import run_deployment

    first = run_deployment(crashing, timeout=0)
    original = stack.wait(first.id, lambda r: r.state.is_cancelled(), 300, "three crashes, then the hand-off")
    assert original.run_count == 3 and sum(s.is_crashed() for s in states_of(stack, first.id)) == 3
    with stack.client() as client:
        moved = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"resumes:{first.id}"])))
    assert len(moved) == 1
    last = stack.wait(moved[0].id, lambda r: r.state.is_failed(), 300, "the on-demand budget to run out")
    assert last.run_count == 2  # one resume on the on-demand pool, then no more
    assert "not retried again" in last.state.message and "Looks like a bug" in last.state.message
    time.sleep(10)  # nothing loops: no new attempt, no new run
    assert stack.wait(moved[0].id, lambda r: True, 5, "read").run_count == 2
    with stack.client() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"resumes:{moved[0].id}"])))
    assert runs == []


@pytest.mark.timeout(400)
def test_a_crash_the_automation_never_sees_is_recovered_by_the_sweep(stack, crashing):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled

    # The paused automation stands in for the dropped event: no crash of this run starts a recovery.
    with stack.client() as client:
        (recover,) = client.read_automations_by_name(RECOVER)
        client.pause_automation(recover.id)
    run = None
    try:
        run = run_deployment(crashing, timeout=0)

        def resumed_once(r) -> bool:
            return any(s.name == RESCHEDULED and "resumed after interruption 1" in (s.message or "")
                       for s in states_of(stack, r.id))

        stack.wait(run.id, resumed_once, 240, "the sweep to resume the first crash", poll_s=2)
        history = states_of(stack, run.id)
        crash = next(s for s in history if s.is_crashed())
        resume = next(s for s in history if s.name == RESCHEDULED)
        assert (resume.timestamp - crash.timestamp).total_seconds() >= 30, "the sweep waits out the grace"
        with stack.client() as client:
            records = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recovery"])))
            sweeps = [a for a in records if str(run.id) in str(a.data) and a.flow_run_id
                      and client.read_flow(client.read_flow_run(a.flow_run_id).flow_id).name == "recover-missed"]
        assert sweeps and "resume" in str(sweeps[0].data)
    finally:
        with stack.client() as client:
            client.resume_automation(recover.id)
            if run is not None:  # it would crash for ever on sweeps otherwise: end it here
                client.set_flow_run_state(run.id, Cancelled(message="test over"), force=True)
