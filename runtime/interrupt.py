"""Get out of the way promptly on SIGTERM.

Fargate gives a Spot task at most 120 s between SIGTERM and SIGKILL, and `docker stop` gives 10.
Prefect's engine already turns SIGTERM into a `TerminationSignal` that crashes the run, but it
then reports the crash to the API with the client's retries: when the API is gone too (a
temporary server in the same process group, a network cut), that alone took ~150 s, and the
embedding pool's management thread tripped over its cancelled jobs on the way out.

`prompt_exit_on_sigterm` wraps Prefect's handler for the length of a flow body:
1. start a deadline: whatever still runs `grace_s` seconds later, the process exits (143);
2. release heavy resources at once (the embedding worker processes are killed, queued jobs
   dropped), so nothing keeps computing for a run that is over;
3. hand over to Prefect's own handler, which raises `TerminationSignal` in the flow so the engine
   reports Crashed (or, under `flow-run execute` with the reschedule behaviour, puts the run back).
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

DEFAULT_GRACE_S = 8.0  # inside the 10 s a `docker stop` allows, and far inside Fargate's 120 s


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
def prompt_exit_on_sigterm(release: Callable[[], None], grace_s: float = DEFAULT_GRACE_S) -> Iterator[None]:
    """Inside a flow body: on SIGTERM, release resources and make sure the process ends within grace_s."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a flow run in a thread keeps Prefect's
        return
    previous = signal.getsignal(signal.SIGTERM)
    fired = threading.Event()

    def handler(signum, frame):
        if not fired.is_set():
            fired.set()
            _exit_after(grace_s, signum)
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

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)
