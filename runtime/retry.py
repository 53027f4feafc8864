"""The one retry policy for Prefect tasks: it reads spotline.errors and nothing else.

A permanent error (bad input, bad configuration, a bug's ValueError) fails the task at once;
transient and unknown errors get a few retries with jittered exponential backoff. Unknown errors
are retried because, in a batch job, a surprise is more often the environment (a full disk, a
dropped socket wrapped in a library's own type) than the code, and the budget is small.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from spotline import interrupts
from spotline.errors import classify


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry unless the failure is known to be permanent, or the
    host is taking the task back (the rescheduled run retries it, not this dying process)."""
    if interrupts.stop_requested():
        return False
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, BaseException) or classify(exc) != "permanent"


def retry_policy(retries: int = 3, backoff_s: float = 5.0) -> dict[str, Any]:
    """Keyword arguments for @task: ``@task(**retry_policy())``."""
    return dict(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff_s),
        retry_jitter_factor=0.5,
        retry_condition_fn=worth_retrying,
    )
