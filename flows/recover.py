"""Recovery of interrupted runs: resume, move to on-demand capacity, or stop for good.

The story of a run:
1. The `spotline-recover` automation saw a recoverable flow run crash (a lost host, a SIGKILL,
   a worker that reported a dead process) and started this flow with that run's id.
2. Count the run's interruptions from its own state history and decide within the budget:
   resume the same flow run id (its finished tasks come back Cached), re-submit it on the
   on-demand pool, or, past every budget, end it Failed with the reason.
3. Report the decision as an artifact on this run and a log line on both.
"""

from __future__ import annotations

import uuid

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client

from runtime.artifacts import summary_table
from runtime.recovery import recover
from spotline.settings import get_settings


@flow(name="recover-interrupted", description="Resume, re-submit on on-demand capacity, or stop a crashed run.")
def recover_interrupted(flow_run_id: str) -> str:
    """`flow_run_id`: the crashed run's id, or the event resource id `prefect.flow-run.<id>`."""
    run_id = uuid.UUID(flow_run_id.removeprefix("prefect.flow-run."))
    settings = get_settings().prefect
    with get_client(sync_client=True) as client:
        outcome = recover(client, run_id, settings.interruption_budget, settings.fallback_budget)
    get_run_logger().info("flow run %s: %s: %s", run_id, outcome.action, outcome.message)
    summary_table("recovery", [{"flow_run": str(run_id), "action": outcome.action, "message": outcome.message,
                                "new_flow_run": str(outcome.new_run_id or "")}],
                  f"Recovery of flow run {run_id}: {outcome.action}")
    return outcome.action
