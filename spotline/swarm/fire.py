"""Send every prompt of a shard to an HTTP target, as fast as the target allows and no faster.

Why adaptive: a staging service that answers 429 is telling the swarm to slow down, and a gate
that turns throttling into product failures blocks a good release for the load test's sake. So
the number of requests in flight follows the target (AIMD, as TCP does): halve on 429/503 and
pause for Retry-After, grow back by one per window of successes, never above the configured
bound. Throttling and 5xx that outlast the attempts become *target errors*, a load result
reported beside quality, never a failed answer. Plain Python (asyncio + aiohttp), no Prefect.

Why aiohttp and not httpx: on the benchmark's free target at concurrency 64, a plain httpx loop
managed 371 requests/s and a plain aiohttp loop 2,477 (2026-12-02, 2 cores): httpx's connection
pool is the bottleneck, and the harness should never be the slowest thing in a load test.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Iterable

import aiohttp

from spotline.interrupts import stop_requested
from spotline.settings import TargetSpec
from spotline.swarm.suite import SuiteItem

RETRYABLE = {429, 502, 503, 504}
THROTTLED = {429, 503}


@dataclass
class Exchange:
    """One prompt's round trip: what the target answered, or why it did not."""

    id: str
    status: int | None
    latency_s: float
    answer: str | None = None
    context: list[str] = field(default_factory=list)
    refused: bool | None = None
    error: str | None = None  # "timeout", "throttled", "http 500", "connect", "bad response: ..."
    attempts: int = 1
    throttled: int = 0  # 429/503 answers before the final one

    @property
    def load_error(self) -> bool:
        """The target could not take the load (a load result, not an answer to grade)."""
        return self.error is not None and (self.error in ("throttled", "deadline")
                                           or self.error.startswith(("http 5", "connect")))

    @property
    def sent(self) -> bool:
        """False for a prompt that never went out (deadline, unreachable target, a stop): a resumed
        shard sends it, so it is not persisted."""
        return self.attempts > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptiveLimit:
    """How many requests may be in flight: starts at the bound, halves on throttling (at most once
    per pause), grows by one per window of successes, and never exceeds ``bound``."""

    def __init__(self, bound: int, floor: int = 1):
        self.bound, self.floor = bound, floor
        self.limit = float(bound)
        self.in_flight = 0
        self.peak = 0
        self.throttle_events = 0
        self.lowest = bound
        self._resume_at = 0.0
        self._cond = asyncio.Condition()

    async def acquire(self, deadline: float | None = None) -> bool:
        """Wait for a slot; False when ``deadline`` (monotonic) passes first or a stop is requested."""
        async with self._cond:
            while True:
                now = time.monotonic()
                if (deadline is not None and now >= deadline) or stop_requested():
                    return False
                wait = self._resume_at - now
                if wait <= 0 and self.in_flight < int(self.limit):
                    break
                bound = [w for w in (wait if wait > 0 else None, (deadline - now) if deadline else None, 1.0) if w]
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout=min(bound))
                except asyncio.TimeoutError:
                    pass
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return True

    async def release(self, outcome: str = "ok", retry_after: float | None = None) -> None:
        """``ok`` grows the limit; ``throttled`` (429/503) halves it once per pause and pauses for
        Retry-After; ``error`` (5xx, connection) halves it without counting as throttling."""
        async with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            if outcome == "ok":
                self.limit = min(self.bound, self.limit + 1 / max(self.limit, 1))
            else:
                if outcome == "throttled":
                    self.throttle_events += 1
                if now >= self._resume_at:  # one decrease per pause: a burst of 429s is one signal
                    self.limit = max(self.floor, self.limit / 2)
                    self.lowest = min(self.lowest, int(self.limit))
                if retry_after is not None:
                    self._resume_at = max(self._resume_at, now + retry_after)
            self._cond.notify_all()


MAX_RETRY_AFTER_S = 60.0  # a target asking for a day's pause gets a minute; the deadline still rules


def retry_after_s(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(0.0, wait), MAX_RETRY_AFTER_S)


def fill(template: Any, item: SuiteItem) -> Any:
    """The target's body template with this prompt filled in."""
    if isinstance(template, dict):
        return {k: fill(v, item) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, item) for v in template]
    if template == "{prompt}":
        return item.turns[-1]
    if template == "{history}":
        return item.turns[:-1]
    if template == "{turns}":
        return list(item.turns)
    if isinstance(template, str) and "{prompt}" in template:
        return template.replace("{prompt}", item.turns[-1])
    return template


def pick(document: Any, path: str | None) -> Any:
    """A value at a dotted path with ``[i]`` and ``[*]`` steps; None where the path leads nowhere."""
    if path is None:
        return None
    values = [document]
    for step in path.replace("[", ".[").split("."):
        if not step:
            continue
        nxt: list[Any] = []
        for v in values:
            if step == "[*]" and isinstance(v, list):
                nxt.extend(v)
            elif step.startswith("[") and isinstance(v, list):
                i = int(step[1:-1])
                if -len(v) <= i < len(v):
                    nxt.append(v[i])
            elif isinstance(v, dict) and step in v:
                nxt.append(v[step])
        values = nxt
    if "[*]" in path:
        return values
    return values[0] if values else None


async def send_one(session: aiohttp.ClientSession, target: TargetSpec, headers: dict[str, str], item: SuiteItem,
                   limit: AdaptiveLimit, timeout_s: float, max_attempts: int, deadline: float) -> Exchange:
    payload = fill(target.body, item)
    throttled, attempt, backoff = 0, 0, 0.5
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    def gave_up() -> Exchange:
        # Out of time (or told to stop) before an answer: "not sent" when it never went out, so a
        # resumed shard sends it; a load result either way, never a failed answer.
        return Exchange(item.id, None, 0.0, error="throttled" if throttled else "deadline", attempts=attempt - 1,
                        throttled=throttled)

    while True:
        attempt += 1
        if not await limit.acquire(deadline):
            return gave_up()
        started = time.perf_counter()
        try:
            kwargs = {"params": _query(payload)} if target.method == "GET" else {"json": payload}
            # No redirects: secret headers go to the configured URL and nowhere else.
            async with session.request(target.method, target.url, headers=headers, timeout=timeout,
                                       allow_redirects=False, **kwargs) as response:
                status = response.status
                retry_header = response.headers.get("retry-after")
                raw = await response.read()
        except asyncio.TimeoutError:
            await limit.release("ok")  # a slow answer is the product's latency, not a load signal
            return Exchange(item.id, None, time.perf_counter() - started, error="timeout", attempts=attempt,
                            throttled=throttled)
        except aiohttp.ClientError as exc:
            await limit.release("error")
            if attempt >= max_attempts:
                return Exchange(item.id, None, time.perf_counter() - started, error=f"connect: {type(exc).__name__}",
                                attempts=attempt, throttled=throttled)
            await _pause(min(backoff, 10.0), deadline)
            backoff *= 2
            continue
        latency = time.perf_counter() - started
        if status in RETRYABLE:
            wait = retry_after_s(retry_header, min(backoff, 10.0))
            backoff *= 2
            if status in THROTTLED:
                throttled += 1
                await limit.release("throttled", retry_after=wait)
            else:
                await limit.release("error")
            if attempt >= max_attempts:
                return Exchange(item.id, status, latency, error="throttled" if status in THROTTLED else f"http {status}",
                                attempts=attempt, throttled=throttled)
            if status not in THROTTLED:
                await _pause(wait, deadline)
            continue
        await limit.release("ok")
        return parse(target, item.id, status, latency, raw, attempt, throttled)


async def _pause(seconds: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, deadline - time.monotonic())))


def parse(target: TargetSpec, item_id: str, status: int, latency: float, raw: bytes, attempts: int,
          throttled: int) -> Exchange:
    """An HTTP answer as an exchange: the answer, context and refusal flag at the target's paths."""
    exchange = Exchange(item_id, status, latency, attempts=attempts, throttled=throttled)
    if status >= 400:
        exchange.error = f"http {status}"
        return exchange
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        exchange.error = "bad response: not JSON"
        return exchange
    answer = pick(document, target.answer_path)
    if not isinstance(answer, str):
        exchange.error = f"bad response: no answer at {target.answer_path!r}"
        return exchange
    exchange.answer = answer
    context = pick(document, target.context_path) if target.context_path else None
    exchange.context = [c for c in (context if isinstance(context, list) else [context] if context else [])
                        if isinstance(c, str)]
    refused = pick(document, target.refused_path) if target.refused_path else None
    exchange.refused = refused if isinstance(refused, bool) else None
    return exchange


def _query(payload: Any) -> dict[str, str]:
    """GET targets: the body template's fields as query parameters (lists and objects as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in (payload or {}).items()}


@dataclass
class LoadStats:
    peak_in_flight: int
    lowest_limit: int
    throttle_events: int
    wall_s: float


async def fire(target: TargetSpec, items: Iterable[SuiteItem], *, concurrency: int, timeout_s: float,
               max_attempts: int, max_duration_s: float, headers: dict[str, str] | None = None,
               on_result: Callable[[Exchange], Awaitable[None] | None] | None = None) -> tuple[list[Exchange], LoadStats]:
    """Send every item, at most ``concurrency`` in flight; results in completion order. Prompts not
    sent before ``max_duration_s`` come back as target errors ("deadline"), never silently dropped."""
    items = list(items)
    limit = AdaptiveLimit(concurrency)
    deadline = time.monotonic() + max_duration_s
    all_headers = {**target.headers, **(headers or {})}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, force_close=False))
    results: list[Exchange] = []
    queue: asyncio.Queue[SuiteItem] = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)
    started = time.perf_counter()

    # A target nobody answers for (connection refused, DNS) would cost every prompt its full
    # back-off. After this many connection failures in a row, the rest are not sent.
    unreachable_after = max(8, 2 * concurrency)
    health = {"failed_in_a_row": 0}

    async def worker() -> None:
        while not stop_requested():  # told to stop (SIGTERM): finish what is in flight, send nothing new
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if health["failed_in_a_row"] >= unreachable_after:
                ex = Exchange(item.id, None, 0.0, error="connect: target unreachable, not sent", attempts=0)
            else:
                ex = await send_one(session, target, all_headers, item, limit, timeout_s, max_attempts, deadline)
                health["failed_in_a_row"] = health["failed_in_a_row"] + 1 if (ex.error or "").startswith("connect") else 0
            results.append(ex)
            if on_result is not None:
                maybe = on_result(ex)
                if asyncio.iscoroutine(maybe):
                    await maybe

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)) or 1)))
    finally:
        await session.close()
    return results, LoadStats(limit.peak, limit.lowest, limit.throttle_events, time.perf_counter() - started)
