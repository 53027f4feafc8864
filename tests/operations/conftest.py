"""An operating Spotline on loopback (deployments/localstack.py): a fresh Prefect server with the
automations, the catalog applied, and real process workers on the main and fallback pools, each
a separate process tree that a test may SIGTERM or SIGKILL like a Spot host."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from uuid import UUID

import pytest

from deployments.localstack import LocalStack, flow_process, kill_tree  # noqa: F401  (used by the tests)
from tests.conftest import SAMPLE

PREFIX = "corpus/help-centre/"


def states_of(stack, flow_run_id: UUID):
    """A flow run's state history, oldest first."""
    with stack.client() as client:
        return sorted(client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)


def task_runs_named(stack, flow_run_id: UUID, prefix: str) -> dict[str, list[str]]:
    """Task runs of a flow run whose name starts with `prefix`, by name -> state names, every attempt
    included (Completed = executed, Cached = reused from a persisted result)."""
    from runtime.history import task_runs_of

    with stack.client() as client:
        runs = task_runs_of(client, flow_run_id)
    out: dict[str, list[str]] = {}
    for t in runs:
        if t.name.startswith(prefix):
            out.setdefault(t.name, []).append(t.state.name if t.state else "?")
    return out


def seed(store: Path) -> None:
    dest = store / "corpus" / "help-centre"
    for path in sorted(SAMPLE.rglob("*")):
        if path.is_file():
            (dest / path.relative_to(SAMPLE)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / path.relative_to(SAMPLE))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Server (proactive automations checked every second), catalog applied, one worker per pool."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("ops")
    spotline_env = {"SPOTLINE_STORE__ROOT": str(home / "store"), "SPOTLINE_INDEX__PATH": str(home / "index"),
                    "SPOTLINE_EMBEDDING__WORKERS": "1",
                    # The recover-missed sweep every minute, 30 s after a crash: a crash event the
                    # server drops under load (runtime/recovery.py) costs a test a minute, not its deadline.
                    "SPOTLINE_PREFECT__RECOVERY_SWEEP_CRON": "* * * * *", "SPOTLINE_PREFECT__RECOVERY_GRACE_S": "30"}
    stack = LocalStack.start(home, spotline_env)
    saved = {k: os.environ.get(k) for k in [*spotline_env, "PREFECT_API_URL"]}
    os.environ.update({**spotline_env, "PREFECT_API_URL": stack.api})
    try:
        with temporary_settings({PREFECT_API_URL: stack.api}):
            stack.start_worker("spotline-local", "main-1")
            stack.start_worker("spotline-local-fallback", "fallback-1")
            yield stack
    finally:
        stack.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
