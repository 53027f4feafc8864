"""Which crashed runs the recover-missed sweep takes, against a real Prefect server.

The sweep backs up the spotline-recover automation, which can miss a crash when the server drops
an event (runtime/recovery.py). It must take every recoverable run left Crashed past the grace and
nothing else: not a run the automation is still handling, not a run already resumed, not a run
that is not Spotline's to recover, not a crash from before the horizon. End to end, with a worker
and the schedule, it is proven in tests/operations/test_crash_budget.py.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Crashed, Scheduled

from runtime.recovery import RECOVERABLE_TAG, RESCHEDULED, missed_crashes


@flow(name="sweep-fixture")
def sweep_fixture() -> None:
    pass


def _crashed(client, tags):
    run = client.create_flow_run(sweep_fixture, tags=tags)
    client.set_flow_run_state(run.id, Crashed(message="Process exited with status code: -9"), force=True)
    return client.read_flow_run(run.id)


def test_the_sweep_takes_recoverable_runs_left_crashed_past_the_grace_and_nothing_else(prefect_api):
    with get_client(sync_client=True) as client:
        left = _crashed(client, [RECOVERABLE_TAG])
        not_ours = _crashed(client, ["someone-else"])
        resumed = _crashed(client, [RECOVERABLE_TAG])
        client.set_flow_run_state(resumed.id, Scheduled(name=RESCHEDULED), force=True)
        crashed_at = left.state.timestamp
        ours = {left.id, not_ours.id, resumed.id}

        def swept(after_s: float, grace_s: float, horizon=timedelta(hours=24)) -> set:
            now = crashed_at + timedelta(seconds=after_s)
            return {r.id for r in missed_crashes(client, grace_s, horizon, now=now)} & ours

        assert swept(after_s=30, grace_s=120) == set(), "inside the grace the automation still has its turn"
        assert swept(after_s=130, grace_s=120) == {left.id}
        assert swept(after_s=3 * 3600, grace_s=120, horizon=timedelta(hours=2)) == set(), "past the horizon"
