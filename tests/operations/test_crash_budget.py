"""A run that crashes on every attempt ends after its budget instead of looping, end to end: a real
Prefect server with the automations and real process workers (`prefect flow-run execute`).

It has a stack of its own. Run on the stack that tests/operations/test_spot_recovery.py had just
used for the lost-host proof, its third crash was not recovered within 300 s, twice on 2026-12-02;
run alone it passes. Why is not known yet (see the note of that day): the recovery automation
fires on each Crashed event, and nothing the lost-host test leaves behind is known to block it.
"""

from __future__ import annotations

import time

import pytest

from tests.operations.test_spot_recovery import states_of

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(600)
def test_a_run_that_crashes_every_time_stops_after_its_budget_with_the_reason(stack):
    from deployments.apply import apply_deployment
    from deployments.catalog import Deployment, fallback_twin
    from prefect.deployments import run_deployment

    crashing = Deployment(name="always-crashes", entrypoint="tests/operations/crashing_flow.py:always_crashes",
                          description="test: crashes on every attempt")
    with stack.client() as client:
        apply_deployment(client, crashing, "local")
        apply_deployment(client, fallback_twin(crashing), "local")
    first = run_deployment("always-crashes/always-crashes", timeout=0)
    original = stack.wait(first.id, lambda r: r.state.is_cancelled(), 300, "three crashes, then the hand-off")
    assert original.run_count == 3 and sum(s.is_crashed() for s in states_of(stack, first.id)) == 3
    with stack.client() as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

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
