"""A flow run's task runs, read whole.

The API answers a read with one page: the server's default limit is 200
(``PREFECT_API_DEFAULT_LIMIT``) and its default order is newest first. A run that Spot interrupted
ten times has well over 200 task runs (every attempt re-creates a task run for each batch it loads
from cache), so a single read silently drops the oldest attempts, which are the ones that did the
work. Seen in CI on the fine-tuning submission: the Spot recovery test read 7 Cached runs and no Completed one for
batches 1-13, and recovery's work-lost accounting lost the same early completions. Everything that
reasons about a run's history reads it through here, oldest first, across pages.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter
from prefect.client.schemas.sorting import TaskRunSort

PAGE = 200  # the server's own default page; a larger `limit` is capped by the server anyway


def task_runs_of(client: Any, flow_run_id: uuid.UUID, task_run_filter: TaskRunFilter | None = None) -> list[Any]:
    """Every task run of `flow_run_id` matching the filter, oldest first (sync client)."""
    found: dict[uuid.UUID, Any] = {}
    offset = 0
    while True:
        page = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                     task_run_filter=task_run_filter, sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                                     limit=PAGE, offset=offset)
        # Keyed by id: a task run created while we page can shift a row onto the next page twice.
        found.update((t.id, t) for t in page)
        if len(page) < PAGE:
            return list(found.values())
        offset += len(page)
