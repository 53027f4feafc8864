"""A cooperative stop signal with a deadline, for work that the host is about to take away.

Fargate Spot sends SIGTERM two minutes before it reclaims a task. The Prefect layer
(runtime.interrupt) turns that signal into :func:`request_stop`; long-running plain code asks
:func:`stop_requested` between units of work (a batch, a slice of a huge document, a training
step) and, when asked to stop, saves what it has (a checkpoint) and raises :class:`Interrupted`.
Nothing here knows about signals or Prefect: a trainer or a test can request a stop the same way.
"""

from __future__ import annotations

import threading
import time

from spotline.errors import TransientError

_lock = threading.Lock()
_stop = threading.Event()
_deadline = float("inf")
_reason = ""


class Interrupted(TransientError):
    """Work stopped early because the host is going away. Transient: the next attempt resumes it."""


def request_stop(reason: str, within_s: float) -> None:
    """Ask running work to stop within ``within_s`` seconds (the first request's deadline holds)."""
    global _deadline, _reason
    with _lock:
        if not _stop.is_set():
            _deadline, _reason = time.monotonic() + within_s, reason
            _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def seconds_left() -> float:
    """Time until the stop deadline (infinite when no stop was requested)."""
    return _deadline - time.monotonic() if _stop.is_set() else float("inf")


def raise_if_stopping(where: str) -> None:
    """Call between units of work: raises Interrupted once a stop has been requested."""
    if _stop.is_set():
        raise Interrupted(f"stopped before {where}: {_reason}")


def clear() -> None:
    """Forget a stop request (a new run in the same process, or a test)."""
    global _deadline, _reason
    with _lock:
        _stop.clear()
        _deadline, _reason = float("inf"), ""
