"""How a run ends when it refuses its input: one clear line, an artifact, nothing persisted.

Raising would print the same message twice with a full traceback (once from the task or flow
engine, once from the caller) and persist a result file for a run that did no work. Returning a
Failed state instead gives the UI its message and the caller a `FailedRun` carrying it; the
result record is created but deliberately not written.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.states import Failed, State


def reject(key: str, message: str) -> State:
    """Return this from a flow body: the run ends Failed with `message`, shown as artifact `key`.

    The engine logs the final state with the message once; no extra log line is written here."""
    create_markdown_artifact(key=key, markdown=f"## Input rejected\n\n{message}\n", description="input rejected")
    context = FlowRunContext.get()
    data = context.result_store.create_result_record(None) if context and context.result_store else None
    return Failed(message=f"input rejected: {message}", data=data)
