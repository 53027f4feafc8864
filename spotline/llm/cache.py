"""Exact-match response cache in the object store, with a TTL and in-flight de-duplication.

The key covers everything that changes an answer: provider, model (and adapter), prompt name,
version and rendered hash, the rendered messages, the schema and the sampling parameters. Entries
live under ``<system_prefix>cache/llm/`` (a folder locally, S3 in aws) so every worker and every
re-run of a flow shares them; a small in-memory LRU in front keeps hits well under a millisecond.
Expired entries count as misses and are overwritten by the next answer (an S3 lifecycle rule on
the prefix can delete them for good).

Concurrent identical calls are de-duplicated: the first caller computes, the others wait for its
answer (:meth:`ResponseCache.single_flight`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from spotline.storage import ObjectStore

log = logging.getLogger(__name__)


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class ResponseCache:
    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        ttl_s: float,
        memory_entries: int = 2048,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.prefix, self.ttl_s, self.clock = store, prefix, ttl_s, clock
        self._memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._memory_entries = memory_entries
        self._lock = threading.Lock()
        self._inflight: dict[str, Future] = {}

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}{key[:2]}/{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
        if entry is None:
            try:
                entry = json.loads(self.store.get(self._object_key(key)))
            except KeyError:
                return None
            except ValueError:  # a torn or foreign object: treat as a miss, the next answer replaces it
                return None
            except Exception as exc:  # a store outage (403, SlowDown...) must not fail the call: a miss
                log.warning("LLM cache read failed, treated as a miss: %s", type(exc).__name__)
                return None
            self._remember(key, entry)
        if entry.get("expires_at", 0) <= self.clock():
            with self._lock:
                self._memory.pop(key, None)
            return None
        return entry

    def put(self, key: str, payload: dict[str, Any]) -> None:
        now = self.clock()
        entry = {**payload, "created_at": now, "expires_at": now + self.ttl_s}
        self._remember(key, entry)
        try:
            self.store.put(self._object_key(key), json.dumps(entry, ensure_ascii=False).encode(), "application/json")
        except Exception as exc:  # the answer is paid for: keep it, in memory at least
            log.warning("LLM cache write failed, answer kept in memory only: %s", type(exc).__name__)

    def _remember(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_entries:
                self._memory.popitem(last=False)

    @contextmanager
    def single_flight(self, key: str) -> Iterator["Flight"]:
        """`flight.leader` is None for the caller that must compute, or the Future of the identical
        call already computing: it resolves when that call ends, raising its error if it failed."""
        with self._lock:
            leader = self._inflight.get(key)
            if leader is None:
                mine: Future = Future()
                self._inflight[key] = mine
        if leader is not None:
            yield Flight(leader, None)
            return
        flight = Flight(None, mine)
        try:
            yield flight
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            if not mine.done():
                mine.set_result(None)


class Flight:
    def __init__(self, leader: Future | None, mine: Future | None):
        self.leader, self._mine = leader, mine

    def fail(self, exc: BaseException) -> None:
        if self._mine is not None and not self._mine.done():
            self._mine.set_exception(exc)
