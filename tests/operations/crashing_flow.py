"""A flow that dies the same way on every attempt: a bug, not a preemption. Recovery must give up on it."""

import os

from prefect import flow


@flow(name="always-crashes")
def always_crashes() -> None:
    os._exit(3)  # no state reported: the worker sees the exit code and marks the run Crashed
