"""The cooperative stop (SIGTERM → finish or checkpoint the current unit → stop) and the recovery
budget, in process. End-to-end interruptions with a real worker are in tests/operations/."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from runtime.interrupt import prompt_exit_on_sigterm, stop_here_if_interrupted
from runtime.recovery import decide
from spotline import interrupts
from spotline.interrupts import Interrupted


class Stopped(BaseException):
    """Stands in for Prefect's TerminationSignal: what the previous SIGTERM handler raises."""


@pytest.fixture(autouse=True)
def no_hard_exit(monkeypatch):
    """The hard deadline (os._exit after grace_s) would end the test session itself: record it instead.
    tests/ingest/test_overlap_and_kills.py checks the real one, on real processes."""
    calls = []
    monkeypatch.setattr("runtime.interrupt._exit_after", lambda grace_s, signum: calls.append((grace_s, signum)))
    return calls


@pytest.fixture
def prefect_like_handler():
    previous = signal.getsignal(signal.SIGTERM)

    def raise_stopped(signum, frame):
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, raise_stopped)
    yield
    signal.signal(signal.SIGTERM, previous)
    interrupts.clear()


def test_sigterm_lets_the_current_unit_finish_then_stops_before_the_next(prefect_like_handler):
    released, finished = [], []
    with pytest.raises(Stopped):
        with prompt_exit_on_sigterm(lambda: released.append(True), grace_s=30, cooperative_s=10):
            for unit in range(5):
                stop_here_if_interrupted()
                if unit == 1:
                    os.kill(os.getpid(), signal.SIGTERM)  # arrives during unit 1
                time.sleep(0.05)  # unit 1 goes on: the signal only asked it to stop
                finished.append(unit)
    assert finished == [0, 1] and released == [True]


def test_a_unit_that_stops_at_a_checkpoint_ends_the_run_like_the_signal(prefect_like_handler):
    with pytest.raises(Stopped):
        with prompt_exit_on_sigterm(lambda: None, grace_s=30, cooperative_s=10):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            interrupts.raise_if_stopping("the next slice")  # a streamed document's checkpoint


def test_a_unit_that_overruns_the_cooperative_window_is_stopped_where_it_is(prefect_like_handler):
    started = time.monotonic()
    with pytest.raises(Stopped):
        with prompt_exit_on_sigterm(lambda: None, grace_s=30, cooperative_s=0.5):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # a long unit with no stopping point
                time.sleep(0.05)
    assert time.monotonic() - started < 3


def test_a_body_that_ends_inside_the_window_still_ends_as_stopped(prefect_like_handler):
    with pytest.raises(Stopped):
        with prompt_exit_on_sigterm(lambda: None, grace_s=30, cooperative_s=10):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    deadline = time.monotonic() + 2  # the escalation timer was cancelled: no signal lands later
    while [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]:
        assert time.monotonic() < deadline, "the escalation timer is still armed"
        time.sleep(0.05)


def test_a_stop_requested_for_an_earlier_run_does_not_stop_the_next(prefect_like_handler):
    interrupts.request_stop("an earlier run", 1)
    with prompt_exit_on_sigterm(lambda: None):
        stop_here_if_interrupted()  # nothing raised
    assert not interrupts.stop_requested()


def test_the_task_retry_policy_does_not_retry_while_the_host_is_going_away(prefect_like_handler):
    from prefect.states import Failed

    from runtime.retry import worth_retrying

    state = Failed(data=ConnectionError("reset"))
    assert worth_retrying(None, None, state)
    interrupts.request_stop("SIGTERM", 5)
    assert not worth_retrying(None, None, state)
    assert isinstance(Interrupted("x"), Exception)


@pytest.mark.parametrize("count, fallback, action", [
    (1, False, "resume"), (2, False, "resume"), (3, False, "fallback"), (7, False, "fallback"),
    (1, True, "resume"), (2, True, "give-up"), (9, True, "give-up"),
])
def test_the_budget_resumes_then_moves_to_on_demand_then_stops(count, fallback, action):
    assert decide(count, fallback, budget=3, fallback_budget=1) == action


def test_inside_a_flow_body_the_engine_can_still_acknowledge_the_supervisors_reschedule():
    """`prefect flow-run execute` SIGKILLs a flow whose engine cannot acknowledge its intent; the
    engine acknowledges only while Prefect's SIGTERM bridge is installed. Ours must pass for it."""
    from prefect.utilities.engine import can_ack_control_intent, capture_sigterm

    with capture_sigterm():  # what the flow engine installs around a run
        assert can_ack_control_intent()
        with prompt_exit_on_sigterm(lambda: None):
            assert can_ack_control_intent()
        assert can_ack_control_intent()
    interrupts.clear()


def test_under_the_supervisor_the_signal_still_ends_the_run_with_prefects_termination_signal():
    from prefect.exceptions import TerminationSignal
    from prefect.utilities import engine as prefect_engine

    # Prefect's bridge installed by hand: capture_sigterm() re-sends the signal to the process on
    # its way out (how a real engine ends), which would end this test session.
    bridge = prefect_engine._prefect_sigterm_handler
    previous = signal.signal(signal.SIGTERM, bridge)
    try:
        with pytest.raises(TerminationSignal):
            with prompt_exit_on_sigterm(lambda: None, grace_s=30, cooperative_s=10):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
                stop_here_if_interrupted()
        assert prefect_engine._prefect_sigterm_handler is bridge  # the stand-in is gone
    finally:
        signal.signal(signal.SIGTERM, previous)
        interrupts.clear()
