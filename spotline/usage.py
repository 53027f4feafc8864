"""Whose bill a model call lands on: a scope (a flow run id) carried in the calling context.

The gateway's ledger is per process, and a process worker, a served deployment or a test runs
many flow runs in one process, some at once. An integer offset into the ledger ("rows since I
started") mixes their calls; tagging each call with the scope current in its context does not.
runtime.report opens a scope per flow run; threads the gateway starts copy the caller's context,
so fanned-out calls keep it.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_SCOPE: ContextVar[str] = ContextVar("spotline_usage_scope", default="")


def current_scope() -> str:
    return _SCOPE.get()


@contextmanager
def usage_scope(scope: str) -> Iterator[str]:
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
