"""A persona run interrupted mid-generation resumes as the same flow run and asks the model again
only for the groups it had not finished: counted on the task runs that actually executed.

The stack is the operations one (real server with the automations, the catalog applied, a process
worker started like an ECS task), the model is the real Gemma 3 270M, the export the committed
labelled sample. The pseudonym key is the Prefect Secret block `apply` created.
"""

from __future__ import annotations

import os
import signal
import time
from uuid import UUID

import pytest

from tests.conftest import ROOT
from tests.operations.conftest import flow_process, states_of, task_runs_named

pytestmark = [pytest.mark.slow]

DAY = "2026-11-30"


def _stage_export(stack) -> None:
    for path in (ROOT / "data" / "production_sample" / f"date={DAY}").iterdir():
        dest = stack.home / "store" / "exports" / "production" / f"date={DAY}" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())


def _group_runs(stack, flow_run_id: UUID) -> dict[str, list[str]]:
    """write-personas task runs by name -> state names (Completed = asked the model, Cached = reused)."""
    return task_runs_named(stack, flow_run_id, "write-personas-")


def _executed(stack, flow_run_id: UUID) -> int:
    return sum(names.count("Completed") for names in _group_runs(stack, flow_run_id).values())


@pytest.mark.timeout(1200)
def test_a_run_interrupted_mid_generation_resumes_without_redoing_finished_groups(stack):
    from prefect.deployments import run_deployment

    _stage_export(stack)
    env = {"env": {"SPOTLINE_PERSONAS__GROUPS": "4", "SPOTLINE_PERSONAS__CARDS_PER_GROUP": "2",
                   "SPOTLINE_PERSONAS__MIN_PER_CATEGORY": "1",
                   # The cache would make a redone group cheap and hide it; task states still tell,
                   # but with the cache off a redone group would also cost its model calls again.
                   "SPOTLINE_LLM__CACHE_ENABLED": "false"}}
    first = run_deployment("personas/personas-adhoc", parameters={"day": DAY}, job_variables=env, timeout=0)
    # Interrupt once at least one group is finished and before the last one is.
    stack.wait(first.id, lambda r: _executed(stack, first.id) >= 1, 600, "a first group to finish", poll_s=1)
    run = stack.wait(first.id, lambda r: True, 5, "read")
    assert _executed(stack, first.id) < 4, "the run finished every group before the interruption could land"
    os.kill(flow_process(run), signal.SIGTERM)
    final = stack.wait(first.id, lambda r: r.state.is_final(), 900, "the resumed run to finish", poll_s=2)

    assert final.state.is_completed(), final.state
    assert final.run_count == 2  # the same flow run id came back once
    assert any(s.name == "AwaitingRetry" for s in states_of(stack, first.id))
    groups = _group_runs(stack, first.id)
    assert len(groups) == 4
    redone = {name: names for name, names in groups.items() if names.count("Completed") != 1}
    assert not redone, f"groups asked of the model more than once or never: {redone}"
    assert sum(names.count("Cached") for names in groups.values()) >= 1  # finished groups came back Cached
    latest = stack.home / "store" / "_spotline" / "datasets" / "personas" / "latest.json"
    assert latest.exists()


def test_an_export_file_landing_starts_a_run_that_waits_for_the_exports_success_marker(stack):
    """The personas-adhoc deployment trigger, through a real object event on the real server: the
    run gets the object's key as its parameter and, for a file that is not `_SUCCESS`, ends at once."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter

    from runtime.events import emit, to_event
    from spotline.ingestion.notifications import ObjectChange

    key = "exports/production/date=2026-12-01/users.csv"
    with stack.client() as client:
        emit(client, [to_event(ObjectChange("created", "spotline", key, "etag-1", "0001"))])

    def triggered():
        with stack.client() as client:
            return [r for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["personas-adhoc"])))
                if r.parameters.get("export_key") == key]

    deadline = time.monotonic() + 180
    while not triggered():
        assert time.monotonic() < deadline, stack.server_events_log()[-3000:]
        time.sleep(1)
    run = stack.wait(triggered()[0].id, lambda r: r.state.is_final(), 300, "the triggered run to finish", poll_s=1)
    assert run.state.is_completed(), run.state
    result = run.state.result()
    assert result["status"] == "waiting" and "_SUCCESS" in result["reason"]
