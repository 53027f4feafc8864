"""A run's history is read whole, against a real Prefect server.

One API read returns one page (200 rows, newest first by default). A Spot run interrupted ten times
holds far more task runs than that, because every attempt re-creates a Cached task run for each
finished batch; a single read then loses the oldest attempts, which are the ones that did the work.
"""

from __future__ import annotations

import time

from prefect import flow, task
from prefect._internal.uuid7 import uuid7
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Completed, Running, Scheduled

from runtime.history import PAGE, task_runs_of
from runtime.recovery import RESCHEDULED, interruptions


@flow(name="history-fixture")
def history_fixture() -> None:
    pass


@task(name="history-batch")
def batch() -> None:
    pass


def run_task(client, run_id, key: str, state) -> None:
    """A task run as the engine makes one: its id is a UUIDv7, so the API's default order (id
    descending) is newest first, and a single read keeps the newest page."""
    client.create_task_run(batch, run_id, dynamic_key=key, id=uuid7(), state=state)


def test_more_task_runs_than_a_page_are_all_read_and_recovery_counts_work_from_the_first_attempt(prefect_api):
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(history_fixture)
        client.set_flow_run_state(run.id, Running(), force=True)
        time.sleep(2.0)  # the first attempt works two seconds before its first batch lands
        for i in range(20):
            run_task(client, run.id, f"a1-{i}", Completed())
        client.set_flow_run_state(run.id, Scheduled(name=RESCHEDULED), force=True)  # SIGTERM right after
        client.set_flow_run_state(run.id, Running(), force=True)
        for i in range(PAGE + 10):  # the second attempt finds them all in cache, and more
            run_task(client, run.id, f"a2-{i}", Completed(name="Cached"))

        runs = task_runs_of(client, run.id)
        assert len(runs) == PAGE + 30
        assert sum(t.state_name == "Completed" for t in runs) == 20
        one_read = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        assert not any(t.state_name == "Completed" for t in one_read), "one read keeps only the newest page"

        first = interruptions(client, run.id)[0]
        # From the last real completion, not from the start of the attempt (2 s earlier).
        assert first.kind == "rescheduled"
        assert first.work_lost_s < 1.5, first
