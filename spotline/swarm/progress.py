"""A shard's progress in the object store, so an interrupted shard resumes where it stopped.

Why parts, not one file: object stores do not append. A shard writes its exchanges and grades in
small numbered parts as they finish (every few results, and before it stops); on resume it reads
every part and sends only prompts without an exchange, and judges only answers without a grade.
A part is written atomically (one PUT), so a kill loses at most the results not yet written,
never a half part. Plain Python.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, TypeVar

from spotline.storage import ObjectStore
from spotline.swarm.fire import Exchange
from spotline.swarm.grading import Grade
from spotline.swarm.suite import SuiteItem

T = TypeVar("T")


class PartWriter:
    """Buffers rows and writes them as ``<prefix>part-NNNNN.jsonl`` every ``every`` rows."""

    def __init__(self, store: ObjectStore, prefix: str, every: int):
        self.store, self.prefix, self.every = store, prefix, max(1, every)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._next = 1 + max((int(o.key.rsplit("part-", 1)[1].split(".")[0])
                              for o in store.list(prefix) if "part-" in o.key), default=-1)

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
            if len(self._rows) >= self.every:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._rows).encode()
        self.store.put(f"{self.prefix}part-{self._next:05d}.jsonl", body, "application/x-ndjson")
        self._next += 1
        self._rows = []


def read_parts(store: ObjectStore, prefix: str, make: Callable[[dict[str, Any]], T]) -> list[T]:
    rows: list[T] = []
    for info in sorted(store.list(prefix), key=lambda o: o.key):
        for line in store.get(info.key).decode().splitlines():
            if line.strip():
                rows.append(make(json.loads(line)))
    return rows


class ShardProgress:
    """Where one shard keeps its prompts, exchanges and grades: ``<run>/shard-NNN/``."""

    def __init__(self, store: ObjectStore, run_prefix: str, shard: int, every: int = 10):
        self.store = store
        self.prefix = f"{run_prefix}shard-{shard:03d}/"
        self.every = every  # exchanges per part: a kill re-sends at most this many prompts

    # the coordinator writes a shard's prompts once; the shard flow run reads them by key
    def write_items(self, items: list[SuiteItem]) -> None:
        self.store.put(self.prefix + "items.jsonl",
                       "".join(json.dumps(i.as_dict(), ensure_ascii=False) + "\n" for i in items).encode())

    def items(self) -> list[SuiteItem]:
        return [SuiteItem.from_dict(json.loads(line))
                for line in self.store.get(self.prefix + "items.jsonl").decode().splitlines() if line.strip()]

    def exchanges(self) -> dict[str, Exchange]:
        done = read_parts(self.store, self.prefix + "exchanges/", lambda d: Exchange(**d))
        return {e.id: e for e in done}

    def grades(self) -> dict[str, Grade]:
        done = read_parts(self.store, self.prefix + "grades/", lambda d: Grade(**d))
        return {g.id: g for g in done}

    def exchange_writer(self) -> PartWriter:
        return PartWriter(self.store, self.prefix + "exchanges/", self.every)

    def grade_writer(self) -> PartWriter:
        # One grade per part: a judge call costs far more than a PUT, and a resumed shard must not
        # pay for a verdict twice.
        return PartWriter(self.store, self.prefix + "grades/", 1)

    def write_stats(self, stats: dict[str, Any]) -> None:
        self.store.put(self.prefix + "load.json", json.dumps(stats).encode())

    def stats(self) -> dict[str, Any] | None:
        if self.store.head(self.prefix + "load.json") is None:
            return None
        return json.loads(self.store.get(self.prefix + "load.json"))
