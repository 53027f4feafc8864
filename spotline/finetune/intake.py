"""Feedback intake: drain the queue in batches into the feedback dataset, scrubbed, each event once.

Per batch of received messages:

1. **Parse** each body (feedback.parse). A malformed one goes to the dead-letter destination
   with its reason (a field and a rule, never a value) and is deleted at once: it can never
   succeed, and must neither block the queue nor come back.
2. **De-duplicate** by event id, within the batch and against every id already stored. The queue
   delivers at least once (a drain that dies after writing but before deleting, a visibility
   timeout that runs out, a producer that sends twice), so an id seen before is dropped.
3. **Scrub** ``prompt``, ``response`` and ``correction`` with the persona sanitizer
   (spotline.personas.sanitize: Presidio's pattern and checksum recognizers, offline, plus the
   batch's own user ids as known values), then leak-scan the result for every value the
   recognizers found. The user id becomes a keyed HMAC pseudonym (the personas' key and kind, so
   a user has one pseudonym in both datasets); the raw id is never written. **Fail closed**: if
   scrubbing raises or the scan finds a value, :class:`ScrubFailed` / ``LeakFound`` is raised,
   nothing of the batch is written and no message deleted, so they come back after their
   visibility timeout (and, failing again and again, end in the dead-letter destination by the
   redrive policy, or the spool's ``max_receives``).
4. **Write** each UTC day the batch touches: read that day's version of the dataset, append,
   and publish the day again (``Datasets.publish(name, version=day)``). Republishing a whole
   day is what makes storage idempotent: a retried batch rewrites the same rows, never adds them.
5. **Delete** the batch's messages, and only now: everything they carried is durably stored.

Two drains writing one dataset at the same time would each read a day, append their own rows
and publish, and the second publish would drop the first one's rows after its messages were
deleted. So a drain holds a lease on the dataset (an object next to it, taken and renewed with
the store's conditional write, expiring if its holder dies): a second drain refuses with
:class:`IntakeBusy` (transient: the task retries later) before receiving anything.

Scaling limit, on purpose: every drain reads the ``id`` of every stored event (feedback is
clicks, thousands a day, not millions), and a batch rewrites each day it touches. Past a few
million stored events, keep an id index (or partition ids by hash) instead of reading all days.

Nothing here logs or raises the text of a message, or a user id: errors and logs name message
ids, event ids, fields and reasons.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import pandas as pd

from spotline.errors import PermanentError, TransientError
from spotline.finetune.feedback import BadFeedback, FeedbackEvent, parse
from spotline.finetune.queues import FeedbackQueue, Message
from spotline.personas.sanitize import (
    EMAIL,
    KnownValues,
    LeakScanner,
    Pseudonymizer,
    Sanitizer,
    SanitizerStats,
    pattern_recognizers,
)
from spotline.storage.base import ObjectNotFound, VersionConflict
from spotline.storage.datasets import Datasets

log = logging.getLogger(__name__)

TEXT_FIELDS = ("prompt", "response", "correction")
USER_ID = "USER_ID"  # placeholder for a batch's own user ids found in its text
COLUMNS = ["id", "ts", "day", "user", "rating", "kind", "prompt", "response", "correction", "model_version",
           "redactions", "ingested_at"]
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "ES")


class ScrubFailed(PermanentError):
    """The sanitizer failed on a batch: nothing was stored, no message deleted (fail closed)."""


class IntakeBusy(TransientError):
    """Another drain holds the dataset's intake lease (or took it over): try again later."""


@dataclass
class IntakeStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # dead-letter reason -> messages
    corrections: int = 0
    complaints: int = 0
    praise: int = 0
    batches: int = 0
    days: list[str] = field(default_factory=list)  # UTC days whose version was (re)published
    not_deleted: int = 0  # stored, but the queue kept the message (stale receipt): it comes back a duplicate
    redacted: dict[str, int] = field(default_factory=dict)  # entity -> spans replaced; counts only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Scrubbing
# ---------------------------------------------------------------------------------------------

class Scrubber:
    """The persona sanitizer applied to feedback: recognizers built once, known values per batch."""

    def __init__(self, pseudonymizer: Pseudonymizer, recognizers: list[Any]):
        self.pseudonym, self.recognizers = pseudonymizer, recognizers
        self.stats = SanitizerStats()

    @classmethod
    def build(cls, pseudonym_key: str | bytes, regions: Iterable[str] = DEFAULT_REGIONS) -> "Scrubber":
        return cls(Pseudonymizer(pseudonym_key), pattern_recognizers(tuple(regions)))

    def rows(self, events: list[FeedbackEvent], ingested_at: datetime) -> list[dict[str, Any]]:
        """The events as dataset rows: user pseudonymized, text scrubbed, then leak-scanned."""
        try:
            # A user who types their own id ("I'm usr_8812, ...") must not get it stored that way.
            known = KnownValues()
            for e in events:
                known.add(EMAIL if "@" in e.user else USER_ID, e.user)
            known.build()
            sanitizer = Sanitizer(known, self.recognizers)
        except Exception as exc:  # noqa: BLE001 - any failure is fail-closed
            raise ScrubFailed(f"the sanitizer could not be built for a batch of {len(events)} "
                              f"({type(exc).__name__}): nothing stored, no message deleted") from None
        rows = []
        for e in events:
            row: dict[str, Any] = {"id": e.id, "ts": e.ts, "day": e.day, "rating": e.rating, "kind": e.kind,
                                   "model_version": e.model_version, "ingested_at": ingested_at, "redactions": 0}
            for name in TEXT_FIELDS:
                try:
                    row[name], spans = sanitizer.scrub(getattr(e, name))
                except Exception as exc:  # noqa: BLE001
                    # `from None`, and only the type: a library's error text may quote the input.
                    raise ScrubFailed(f"scrubbing field {name!r} of event {e.id} failed ({type(exc).__name__}): "
                                      "nothing stored, no message deleted") from None
                row["redactions"] += len(spans)
            row["user"] = self.pseudonym("user_id", e.user)
            rows.append(row)
        # Fail closed on what the recognizers found in one field but missed in another form elsewhere.
        LeakScanner(known, sanitizer.found).check(
            "feedback after scrubbing", ((r["id"], f, r[f]) for r in rows for f in (*TEXT_FIELDS, "user")))
        for entity, n in sanitizer.stats.by_entity.items():
            self.stats.by_entity[entity] = self.stats.by_entity.get(entity, 0) + n
        self.stats.texts += sanitizer.stats.texts
        self.stats.texts_changed += sanitizer.stats.texts_changed
        return rows


# ---------------------------------------------------------------------------------------------
# The dataset's intake lease
# ---------------------------------------------------------------------------------------------

class IntakeLease:
    """One drain per dataset: an object ``<datasets>/<name>/intake.lease`` written with put_if.

    A holder renews it before every write; a holder that died is taken over once its lease ran
    out. Its record names host, pid and expiry (no data), for whoever finds it."""

    def __init__(self, datasets: Datasets, name: str, lease_s: float, clock: Callable[[], datetime]):
        self.store, self.key = datasets.store, f"{datasets.root}{name}/intake.lease"
        self.lease_s, self.clock, self.version = lease_s, clock, None
        self.holder = uuid.uuid4().hex

    def _record(self) -> bytes:
        until = self.clock() + timedelta(seconds=self.lease_s)
        return json.dumps({"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                           "until": until.isoformat()}).encode()

    def acquire(self) -> None:
        for _ in range(3):
            head = self.store.head(self.key)
            try:
                if head is not None:
                    current = _lease_record(self.store.get(self.key))
                    if current["until"] > self.clock():
                        raise IntakeBusy(f"another feedback drain ({current.get('host')}, pid {current.get('pid')}) "
                                         f"holds {self.key} until {current['until'].isoformat()}")
                    log.warning("taking over the expired intake lease %s (%s, pid %s)", self.key,
                                current.get("host"), current.get("pid"))
                self.version = self.store.put_if(self.key, self._record(), head.version if head else None,
                                                 "application/json")
                return
            except (VersionConflict, ObjectNotFound):
                continue  # it changed under us: look again
        raise IntakeBusy(f"could not take {self.key}: other drains keep changing it")

    def renew(self) -> None:
        try:
            self.version = self.store.put_if(self.key, self._record(), self.version, "application/json")
        except VersionConflict:
            raise IntakeBusy(f"lost {self.key} to another drain (this one was slower than its lease): "
                             "stopping before writing; the batch comes back") from None

    def release(self) -> None:
        head = self.store.head(self.key)
        if head is not None and head.version == self.version:
            self.store.delete(self.key)


def _lease_record(data: bytes) -> dict[str, Any]:
    """The lease's record; an unreadable one counts as expired (or it would block every drain for ever)."""
    try:
        record = json.loads(data)
        record["until"] = datetime.fromisoformat(record["until"])
        if record["until"].tzinfo is None:
            raise ValueError("naive")
        return record
    except (ValueError, KeyError, TypeError):
        return {"until": datetime.min.replace(tzinfo=timezone.utc), "host": "?", "pid": "?"}


# ---------------------------------------------------------------------------------------------
# Draining
# ---------------------------------------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def drain(queue: FeedbackQueue, datasets: Datasets, scrubber: Scrubber, dataset: str = "feedback", *,
          batch_size: int = 100, max_batches: int | None = None, visibility_s: float = 300, wait_s: float = 0,
          producer: str = "spotline feedback intake", lease_s: float | None = None,
          clock: Callable[[], datetime] = _utcnow) -> IntakeStats:
    """Drain until the queue is empty (or `max_batches`); see the module docstring for each step.

    Only the first receive waits up to `wait_s`; after that an empty receive ends the drain. The
    lease outlives a batch's visibility timeout, so a drain that is merely slow loses its
    messages' visibility before it loses the lease.
    """
    stats = IntakeStats()
    lease = IntakeLease(datasets, dataset, lease_s or max(visibility_s * 2, 60.0), clock)
    lease.acquire()
    try:
        seen = stored_ids(datasets, dataset)
        while max_batches is None or stats.batches < max_batches:
            messages = queue.receive(batch_size, visibility_s, wait_s if stats.batches == 0 else 0)
            if not messages:
                break
            stats.batches += 1
            stats.received += len(messages)
            _batch(queue, datasets, scrubber, dataset, messages, seen, stats, producer, lease, clock)
    finally:
        lease.release()
    stats.redacted = dict(scrubber.stats.by_entity)
    stats.days = sorted(set(stats.days))
    log.info("feedback intake: %d received, %d stored (%d corrections), %d duplicates, %d dead-lettered, %d batches",
             stats.received, stats.stored, stats.corrections, stats.duplicates, stats.dead_lettered, stats.batches)
    return stats


def _batch(queue: FeedbackQueue, datasets: Datasets, scrubber: Scrubber, dataset: str, messages: list[Message],
           seen: set[str], stats: IntakeStats, producer: str, lease: IntakeLease,
           clock: Callable[[], datetime]) -> None:
    receipts: list[str] = []  # deleted once the batch is stored
    fresh: dict[str, FeedbackEvent] = {}
    now = clock()
    for m in messages:
        try:
            event = parse(m.body, now)
        except BadFeedback as exc:
            queue.dead_letter(m.body, exc.reason)
            queue.delete([m.receipt])
            stats.dead_lettered += 1
            stats.reasons[exc.reason] = stats.reasons.get(exc.reason, 0) + 1
            log.warning("feedback message %s dead-lettered: %s", m.message_id, exc.reason)
            continue
        receipts.append(m.receipt)
        if event.id in seen or event.id in fresh:
            stats.duplicates += 1
            continue
        fresh[event.id] = event
    if fresh:
        rows = scrubber.rows(list(fresh.values()), clock())  # raises before anything is written
        by_day: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(row["day"], []).append(row)
        lease.renew()  # still ours: nobody else wrote these days since we read the stored ids
        for day, day_rows in sorted(by_day.items()):
            added = _append_day(datasets, dataset, day, day_rows, producer)
            stats.stored += added
            stats.duplicates += len(day_rows) - added
            stats.days.append(day)
        kinds = Counter(e.kind for e in fresh.values())
        stats.corrections += kinds["correction"]
        stats.complaints += kinds["complaint"]
        stats.praise += kinds["praise"]
        seen.update(fresh)
    stats.not_deleted += len(receipts) - queue.delete(receipts)


def _append_day(datasets: Datasets, dataset: str, day: str, rows: list[dict[str, Any]], producer: str) -> int:
    """Republish one day with `rows` added (those whose id the day already holds are skipped); returns rows added."""
    existing = read_day(datasets, dataset, day)
    new = _frame(rows)
    if len(existing):
        new = new[~new["id"].isin(set(existing["id"]))]
        if new.empty:
            return 0
    frame = _normalise(pd.concat([existing, new], ignore_index=True) if len(existing) else new)
    frame = frame.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)
    counts = frame["kind"].value_counts().to_dict()
    datasets.publish(dataset, day, [frame], producer=producer, extra={
        "counts": {k: int(v) for k, v in counts.items()},
        # lets corrections_since skip whole days by reading manifests only
        "last_ingested_at": frame["ingested_at"].max().isoformat(),
    })
    return len(new)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return _normalise(pd.DataFrame(rows, columns=COLUMNS))


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One schema whatever the parts: UTC timestamps, integer counts, strings (correction nullable)."""
    frame = frame[COLUMNS].copy()
    for col in ("ts", "ingested_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
    frame["redactions"] = frame["redactions"].astype("int64")
    frame["correction"] = frame["correction"].astype(object).where(frame["correction"].notna(), None)
    return frame


def read_day(datasets: Datasets, dataset: str, day: str) -> pd.DataFrame:
    """One day's stored feedback (empty with the dataset's columns when that day has no version)."""
    try:
        return datasets.read(dataset, day)
    except ObjectNotFound:
        return pd.DataFrame(columns=COLUMNS)


def stored_ids(datasets: Datasets, dataset: str) -> set[str]:
    """Every event id the dataset holds (reads every day: see the scaling note above)."""
    ids: set[str] = set()
    for day in datasets.versions(dataset):
        ids.update(str(i) for i in datasets.read(dataset, day)["id"])
    return ids


def load_feedback(datasets: Datasets, dataset: str = "feedback") -> pd.DataFrame:
    """All stored feedback, every day, oldest first (empty with the columns when there is none)."""
    days = [datasets.read(dataset, day) for day in datasets.versions(dataset)]
    days = [d for d in days if len(d)]
    if not days:
        return pd.DataFrame(columns=COLUMNS)
    frame = _normalise(pd.concat(days, ignore_index=True))
    return frame.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)


def corrections_since(datasets: Datasets, dataset: str = "feedback", since: datetime | None = None) -> int:
    """Training pairs (kind ``correction``) ingested after `since` (all of them for None).

    Days whose manifest says nothing was ingested after `since` are not read at all."""
    if since is not None and since.tzinfo is None:
        raise ValueError("corrections_since: `since` must carry a time zone")
    total = 0
    for day in datasets.versions(dataset):
        if since is not None:
            last = datasets.manifest(dataset, day).extra.get("last_ingested_at")
            if last and datetime.fromisoformat(last) <= since:
                continue
        frame = datasets.read(dataset, day)
        if frame.empty:
            continue
        mask = frame["kind"] == "correction"
        if since is not None:
            mask &= pd.to_datetime(frame["ingested_at"], utc=True) > pd.Timestamp(since)
        total += int(mask.sum())
    return total
