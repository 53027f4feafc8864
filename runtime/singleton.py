"""One run of a flow at a time, whoever started it: a deployment trigger, a schedule, or a person.

A deployment's concurrency limit covers the runs of that deployment only. The fine-tune can also
be started ad hoc (`spotline finetune run`, or the flow called directly) while a triggered run of
the same training is under way, and two trainers would then write one job's checkpoints at once.
So the flow asks the API at its start: if another run of the same flow is already running and
started first (ties broken by id, so of two runs starting together exactly one goes on), this run
steps aside and says which one to follow.
"""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run


def earlier_run(flow_name: str) -> Any | None:
    """Another running run of `flow_name` that started before this one (None: this run goes on)."""
    me = flow_run.id
    if not me:
        return None
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
        mine = next((r for r in runs if str(r.id) == str(me)), None)
    if mine is None or mine.start_time is None:
        return None

    def order(r):
        return (r.start_time, str(r.id))

    earlier = [r for r in runs if str(r.id) != str(me) and r.start_time is not None and order(r) < order(mine)]
    return min(earlier, key=order) if earlier else None
