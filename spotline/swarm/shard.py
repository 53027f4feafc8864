"""One shard of a swarm, start to finish: fire what was not sent, grade what was not graded.

Why it is resumable by construction: both steps start by reading the shard's progress from the
object store (spotline/swarm/progress.py) and skip what is there, so a shard that Spot took away,
or a task Prefect retried, re-sends no finished prompt and re-judges no finished answer. Plain
Python; the Prefect tasks in tasks/swarm.py wrap these two functions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from spotline.interrupts import raise_if_stopping, stop_requested
from spotline.settings import TargetSpec
from spotline.swarm.fire import Exchange, fire
from spotline.swarm.grading import PASS, CheckConfig, Grade, apply_judge, check
from spotline.swarm.progress import ShardProgress
from spotline.swarm.suite import SuiteItem

log = logging.getLogger(__name__)

Judge = Callable[[SuiteItem, Exchange], tuple[dict[str, Any] | None, str | None]]


def fire_shard(progress: ShardProgress, target: TargetSpec, *, concurrency: int, timeout_s: float,
               max_attempts: int, max_duration_s: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Send the shard's unsent prompts; every exchange is persisted as it finishes (in parts)."""
    items = progress.items()
    done = progress.exchanges()
    todo = [i for i in items if i.id not in done]
    writer = progress.exchange_writer()
    stats: dict[str, Any] = {"sent": 0, "already_sent": len(done), "peak_in_flight": 0, "lowest_limit": concurrency,
                             "throttle_events": 0, "wall_s": 0.0, "bound": concurrency}
    if todo:
        async def keep(ex: Exchange) -> None:
            if ex.sent:  # a prompt that never went out is sent by the resumed shard
                await asyncio.to_thread(writer.add, ex.as_dict())  # a store PUT must not stall the loop

        try:
            results, load = asyncio.run(fire(target, todo, concurrency=concurrency, timeout_s=timeout_s,
                                             max_attempts=max_attempts, max_duration_s=max_duration_s,
                                             headers=headers, on_result=keep))
        finally:
            writer.flush()  # whatever finished is kept, also when the shard is being stopped
        stats.update(sent=len(results), **asdict(load))
        raise_if_stopping("sending prompts")
    previous = progress.stats()
    if previous:  # a resumed shard: the load figures cover every attempt
        stats["peak_in_flight"] = max(stats["peak_in_flight"], previous.get("peak_in_flight", 0))
        stats["lowest_limit"] = min(stats["lowest_limit"], previous.get("lowest_limit", concurrency))
        stats["throttle_events"] += previous.get("throttle_events", 0)
        stats["wall_s"] += previous.get("wall_s", 0.0)
    progress.write_stats(stats)
    return stats


def grade_shard(progress: ShardProgress, checks: CheckConfig, embed: Callable[[list[str]], np.ndarray] | None,
                judge: Judge | None, gating: bool, workers: int = 1) -> dict[str, int]:
    """Grade the shard's ungraded exchanges: checks, then the judge on answers the checks passed.
    Grades are persisted in parts as they finish; a stop request ends the loop between answers."""
    items = {i.id: i for i in progress.items()}
    exchanges = progress.exchanges()
    done = progress.grades()
    todo = [exchanges[i] for i in items if i in exchanges and i not in done]
    writer = progress.grade_writer()
    counts = {"graded": 0, "already_graded": len(done), "judged": 0}
    lock = threading.Lock()

    def one(ex: Exchange) -> Grade | None:
        if stop_requested():
            return None
        item = items[ex.id]
        g = check(item, ex, checks, embed)
        judged = judge is not None and g.outcome == PASS
        if judged:
            verdict, error = judge(item, ex)
            apply_judge(g, verdict, error, gating)
        writer.add(g.as_dict())
        with lock:
            counts["graded"] += 1
            counts["judged"] += judged
        return g

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(one, todo))
    finally:
        writer.flush()
    raise_if_stopping("grading answers")
    return counts
