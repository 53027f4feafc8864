"""Per-provider circuit breakers and in-process concurrency / rate limits.

The gateway takes any object with ``slot(provider)`` as its limiter. :class:`LocalLimiter` bounds
one process; inside a Prefect run ``runtime.limits.PrefectLimiter`` uses the server's global
concurrency and rate limits instead, so every task and worker of a flow shares the same budget.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from contextlib import AbstractContextManager
from typing import Callable, Iterator, Protocol

DEFAULT_CONCURRENCY = 8  # a provider with no entry in llm.concurrency


def burst_for(per_minute: float) -> int:
    """How many calls a rate limit lets start at once: one second's worth, at least one."""
    return max(1, int(per_minute // 60))


class Limiter(Protocol):
    def slot(self, provider: str) -> AbstractContextManager[None]:
        """Hold one call slot for `provider` (waiting for a free slot and the rate limit)."""


class TokenBucket:
    """`per_minute` call starts per minute, bursting up to `burst`."""

    def __init__(self, per_minute: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = float(burst or burst_for(per_minute))
        self.tokens, self.clock = self.capacity, clock
        self.updated = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


class LocalLimiter:
    def __init__(self, concurrency: dict[str, int], rate_per_minute: dict[str, float] | None = None):
        self._sems = {p: threading.BoundedSemaphore(max(1, n)) for p, n in concurrency.items()}
        self._buckets = {p: TokenBucket(r) for p, r in (rate_per_minute or {}).items() if r}
        self._default = threading.BoundedSemaphore(DEFAULT_CONCURRENCY)

    @contextmanager
    def slot(self, provider: str) -> Iterator[None]:
        bucket = self._buckets.get(provider)
        if bucket:
            bucket.take()
        with self._sems.get(provider, self._default):
            yield


class CircuitBreaker:
    """Opens after `failures` consecutive provider failures; after `cooldown_s` lets one trial call
    through (half-open): success closes it, failure re-opens it. Schema errors don't count: the
    provider answered."""

    def __init__(self, failures: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.threshold, self.cooldown_s, self.clock = max(1, failures), cooldown_s, clock
        self.consecutive, self.opened_at, self.trial_running = 0, None, False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        if self.opened_at is None:
            return True  # closed: no lock on the hot path
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self.trial_running:
                self.trial_running = True
                return True
            return False

    def success(self) -> None:
        if self.consecutive == 0 and self.opened_at is None and not self.trial_running:
            return  # the common case, healthy and closed: nothing to change, no lock
        with self._lock:
            self.consecutive, self.opened_at, self.trial_running = 0, None, False

    def release_trial(self) -> None:
        """The trial call ended without a verdict on the provider: let the next call try."""
        if self.trial_running:
            with self._lock:
                self.trial_running = False

    def failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self.trial_running or self.consecutive >= self.threshold:
                self.opened_at = self.clock()
            self.trial_running = False
