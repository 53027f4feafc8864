"""Get out of the way promptly on SIGTERM.

Fargate gives a Spot task at most 120 s between SIGTERM and SIGKILL, and `docker stop` gives 10.
Prefect's engine already turns SIGTERM into a `TerminationSignal` that crashes the run, but it
then reports the crash to the API with the client's retries: when the API is gone too (a
temporary server in the same process group, a network cut), that alone took ~150 s, and the
embedding pool's management thread tripped over its cancelled jobs on the way out.

`prompt_exit_on_sigterm` wraps Prefect's handler for the length of a flow body:
1. start a deadline: whatever still runs `grace_s` seconds later, the process exits (143);
2. ask running work to stop cooperatively (spotline.interrupts): for `cooperative_s` seconds the
   current unit may finish or checkpoint (a batch completes and persists its result; a streamed
   document saves its embeddings and stops between slices), and no new batch starts;
3. then, or as soon as the flow reaches a stopping point, release heavy resources (the embedding
   worker processes are killed, queued jobs dropped) and hand over to Prefect's own handler,
   which raises `TerminationSignal` in the flow: the engine reports Crashed, or, under
   `prefect flow-run execute` with PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule (the
   Spotline pools), exits quietly while the supervisor puts the same flow run back to Scheduled.
Nothing is left half-written by the hard exit: index commits and object-store writes are atomic,
and the next run (or the rescheduled one) finishes the work from what was saved.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from spotline import interrupts
from spotline.interrupts import Interrupted

DEFAULT_GRACE_S = 8.0  # inside the 10 s a `docker stop` allows, and far inside Fargate's 120 s
# Of that, how long the current unit may run on to finish or checkpoint before the flow is stopped.
DEFAULT_COOPERATIVE_S = 5.0

_escalate: Callable[[], None] | None = None  # the running flow body's "stop now" (main thread only)


def stop_here_if_interrupted() -> None:
    """A flow's stopping point (between batches): once a stop was requested, end the run now the
    way SIGTERM would (TerminationSignal), instead of starting more work."""
    if interrupts.stop_requested() and _escalate is not None:
        _escalate()


def _exit_after(grace_s: float, signum: int) -> None:
    def deadline() -> None:
        threading.Event().wait(grace_s)
        try:
            sys.stderr.write(
                f"spotline: stopped by signal {signum}; still shutting down after {grace_s:.0f} s "
                "(Prefect API unreachable?), exiting now\n"
            )
            sys.stderr.flush()
        finally:
            os._exit(128 + signum)

    threading.Thread(target=deadline, name="spotline-sigterm-deadline", daemon=True).start()


@contextmanager
def prompt_exit_on_sigterm(
    release: Callable[[], None], grace_s: float = DEFAULT_GRACE_S, cooperative_s: float = DEFAULT_COOPERATIVE_S,
) -> Iterator[None]:
    """Inside a flow body: on SIGTERM, let the current unit finish or checkpoint for cooperative_s,
    then release resources and stop the flow; the process ends within grace_s whatever happens."""
    global _escalate
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a flow run in a thread keeps Prefect's
        return
    previous = signal.getsignal(signal.SIGTERM)
    fired, stopping = threading.Event(), threading.Event()
    timers: list[threading.Timer] = []
    interrupts.clear()  # a stop requested for an earlier run in this process is not this run's

    def stop_now(signum: int = signal.SIGTERM, frame=None) -> None:
        if not stopping.is_set():
            stopping.set()
            try:
                release()
            except Exception as exc:  # best effort: the deadline still holds
                sys.stderr.write(f"spotline: releasing resources on signal {signum} failed: {exc!r}\n")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL or unknown: end the way the default would
            raise SystemExit(128 + signum)

    def handler(signum, frame):
        if fired.is_set():  # the second signal (ours after cooperative_s, or the sender's): stop now
            stop_now(signum, frame)
            return
        fired.set()
        _exit_after(grace_s, signum)
        interrupts.request_stop(f"signal {signum}: the host is taking this task back", cooperative_s)
        # After the cooperative window the main thread gets the signal again, wherever it is.
        timer = threading.Timer(cooperative_s, lambda: os.kill(os.getpid(), signum))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    signal.signal(signal.SIGTERM, handler)
    _escalate = stop_now
    # Under `prefect flow-run execute`, the supervisor first sends its intent (reschedule) over a
    # control channel and the engine acknowledges it only while Prefect's own SIGTERM bridge is the
    # installed handler (an identity check in prefect.utilities.engine); without the ack the
    # supervisor SIGKILLs the flow at once. Our handler ends in that bridge, so it stands in for
    # it while the body runs: the ack goes through, the SIGTERM that follows reaches us, the
    # current unit gets its cooperative window, and the bridge then raises TerminationSignal,
    # which the engine turns into a quiet exit. tests/runtime checks the ack stays possible.
    from prefect.utilities import engine as prefect_engine

    bridge = getattr(prefect_engine, "_prefect_sigterm_handler", None)
    stands_in = bridge is not None and previous is bridge
    if stands_in:
        prefect_engine._prefect_sigterm_handler = handler
    try:
        yield
        # The body got to its end inside the cooperative window: still end the way the signal
        # asks (under `flow-run execute` the run is already rescheduled; its rerun finds it all done).
        if fired.is_set():
            stop_now()
    except Interrupted:
        if fired.is_set():  # a unit stopped at a checkpoint: end the run as the signal would
            stop_now()
        raise
    finally:
        if stands_in:
            prefect_engine._prefect_sigterm_handler = bridge
        _escalate = None
        for timer in timers:  # the body is over: no second signal into whatever runs next
            timer.cancel()
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)
