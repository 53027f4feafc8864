"""Recovery of interrupted runs: resume, move to on-demand capacity, or stop for good.

The story of a run:
1. The `spotline-recover` automation saw a recoverable flow run crash (a lost host, a SIGKILL,
   a worker that reported a dead process) and started this flow with that run's id.
2. Count the run's interruptions from its own state history and decide within the budget:
   resume the same flow run id (its finished tasks come back Cached), re-submit it on the
   on-demand pool, or, past every budget, end it Failed with the reason.
3. Report the decision as an artifact on this run and a log line on both.

`recover-missed` is the same decision on a schedule, for crashes the automation never saw (an
event the server dropped: runtime/recovery.py says when that happens). The story of a sweep:
1. Find recoverable runs that are still Crashed longer than the grace after their crash.
2. Recover each one exactly as above.
3. Report what it did (an artifact only when it did something: most sweeps find nothing).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client

from runtime.artifacts import summary_table
from runtime.recovery import Outcome, missed_crashes, recover
from spotline.settings import get_settings


@flow(name="recover-interrupted", description="Resume, re-submit on on-demand capacity, or stop a crashed run.")
def recover_interrupted(flow_run_id: str) -> str:
    """`flow_run_id`: the crashed run's id, or the event resource id `prefect.flow-run.<id>`."""
    run_id = uuid.UUID(flow_run_id.removeprefix("prefect.flow-run."))
    settings = get_settings().prefect
    with get_client(sync_client=True) as client:
        outcome = recover(client, run_id, settings.interruption_budget, settings.fallback_budget)
    get_run_logger().info("flow run %s: %s: %s", run_id, outcome.action, outcome.message)
    _report([(run_id, outcome)], f"Recovery of flow run {run_id}: {outcome.action}")
    return outcome.action


@flow(name="recover-missed", description="Recover crashed runs that no recovery reached (a lost crash event).")
def recover_missed() -> list[str]:
    settings = get_settings().prefect
    logger = get_run_logger()
    done: list[tuple[uuid.UUID, Outcome]] = []
    with get_client(sync_client=True) as client:
        missed = missed_crashes(client, settings.recovery_grace_s, timedelta(hours=settings.recovery_horizon_h))
        for run in missed:
            outcome = recover(client, run.id, settings.interruption_budget, settings.fallback_budget)
            logger.warning("flow run %s (%s) was still Crashed more than %d s after its crash: %s: %s", run.id, run.name,
                           settings.recovery_grace_s, outcome.action, outcome.message)
            done.append((run.id, outcome))
    if not done:
        logger.info("no crashed run was left without recovery")
        return []
    _report(done, f"{len(done)} crashed run(s) that no recovery had reached, recovered by the sweep")
    return [o.action for _, o in done]


def _report(outcomes: list[tuple[uuid.UUID, Outcome]], description: str) -> None:
    summary_table("recovery", [{"flow_run": str(run_id), "action": o.action, "message": o.message,
                                "new_flow_run": str(o.new_run_id or "")} for run_id, o in outcomes], description)
