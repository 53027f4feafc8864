"""The feedback queue: SQS in aws, a SQLite spool on one host, with the same semantics.

The intake is written once, against SQS's contract: a receive hides the messages it returns for
a visibility timeout and hands out a receipt per message; a message is gone only when deleted
with its *current* receipt; a message not deleted in time is delivered again. Delivery is
therefore at-least-once, and the intake makes storage idempotent (see intake.py).

Why SQLite for the local queue rather than a spool folder of one file per message: claiming a
message must be atomic *and* expire. With files, a claim is a rename into a "processing" folder,
and then nothing brings a claimed file back when its drainer dies (a reaper would need its own
timestamps and would race the drainer it reaps), two drainers race on the same rename, and
"delete only if I still own it" is a stat-then-unlink with a gap in the middle. In SQLite, a
receive is one transaction that picks visible rows and stamps them with a fresh receipt and an
``invisible_until``; a delete is ``DELETE ... WHERE receipt = ?``, which does nothing for a
receipt a later receive replaced. Commits are crash-safe (WAL, ``synchronous=FULL``), and the
semantics are SQS's, so the intake cannot behave differently in the two modes.

Two processes on one host may share a spool file (``BEGIN IMMEDIATE`` serialises claims; each
message goes to one of them). Not over NFS or other network file systems: SQLite's locking is
not reliable there. Across hosts, use SQS.

Messages received ``max_receives`` times that come back once more are moved to the dead-letter
table with the reason ``max-receives`` (what an SQS redrive policy does), so one message that
keeps failing cannot stall the queue for ever.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from spotline.errors import PermanentError
from spotline.finetune.feedback import MAX_BODY_BYTES
from spotline.settings import FeedbackSettings

log = logging.getLogger(__name__)

# The dead-letter reason travels as this message attribute: the same name runtime/relay.py gives
# the upload relay's dead letters, so one console filter shows both.
REASON_ATTRIBUTE = "spotline-reason"
SQS_MAX_BATCH = 10  # ReceiveMessage and DeleteMessageBatch take at most ten


class QueueMisconfigured(PermanentError):
    """The settings do not describe a usable queue (no URL, no dead-letter URL)."""


class MessageTooLarge(PermanentError):
    """A body over SQS's 256 KiB: the spool refuses it the same way."""


@dataclass(frozen=True)
class Message:
    receipt: str  # what delete() needs: valid until the message is received again
    body: str
    receive_count: int  # 1 on the first delivery
    message_id: str  # stable across deliveries


class FeedbackQueue(Protocol):
    def send(self, body: str) -> str:
        """Enqueue one body; returns its message id."""

    def receive(self, max_messages: int, visibility_s: float, wait_s: float = 0) -> list[Message]:
        """Up to `max_messages` visible messages, hidden for `visibility_s`; waits up to `wait_s` for a first one."""

    def delete(self, receipts: list[str]) -> int:
        """Delete by receipt; returns how many went. A stale receipt (the message was received
        again since) deletes nothing: that delivery's holder owns the message now."""

    def dead_letter(self, body: str, reason: str) -> None:
        """Put a body on the dead-letter destination with its reason (the caller deletes the original)."""

    def dead_letters(self) -> list[tuple[str, str]]:
        """(body, reason) of what is dead-lettered, for tests and the CLI; not for large queues."""

    def depth(self) -> int:
        """Messages not deleted yet, visible or in flight (approximate on SQS)."""


# ---------------------------------------------------------------------------------------------
# SQS
# ---------------------------------------------------------------------------------------------

class SqsFeedbackQueue:
    def __init__(self, sqs: Any, queue_url: str, dead_letter_url: str):
        self.sqs, self.queue_url, self.dead_letter_url = sqs, queue_url, dead_letter_url

    def send(self, body: str) -> str:
        return self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)["MessageId"]

    def receive(self, max_messages: int, visibility_s: float, wait_s: float = 0) -> list[Message]:
        """Several ReceiveMessage calls until the batch is full or a call comes back empty. Only
        the first one long-polls: once messages flow, an empty answer means the queue is drained."""
        out: dict[str, Message] = {}
        wait = int(wait_s)
        while len(out) < max_messages:
            reply = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=min(SQS_MAX_BATCH, max_messages - len(out)),
                VisibilityTimeout=max(0, int(round(visibility_s))), WaitTimeSeconds=wait,
                AttributeNames=["ApproximateReceiveCount"])
            got = reply.get("Messages", [])
            if not got:
                break
            for m in got:
                out[m["MessageId"]] = Message(m["ReceiptHandle"], m["Body"],
                                              int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                                              m["MessageId"])
            wait = 0
        return list(out.values())

    def delete(self, receipts: list[str]) -> int:
        deleted = 0
        for start in range(0, len(receipts), SQS_MAX_BATCH):
            chunk = receipts[start:start + SQS_MAX_BATCH]
            reply = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url, Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)])
            deleted += len(reply.get("Successful", []))
            for failed in reply.get("Failed", []):
                # ReceiptHandleIsInvalid: the visibility timeout ran out and someone received it
                # again. The message comes back; its event is then found already stored.
                log.warning("SQS kept a message the intake had stored (%s); it will be delivered again and "
                            "found a duplicate", failed.get("Code"))
        return deleted

    def dead_letter(self, body: str, reason: str) -> None:
        self.sqs.send_message(QueueUrl=self.dead_letter_url, MessageBody=body, MessageAttributes={
            REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000] or "unknown"}})

    def dead_letters(self) -> list[tuple[str, str]]:
        """A peek (visibility timeout 0: nothing is hidden or consumed), until no new message shows."""
        seen: dict[str, tuple[str, str]] = {}
        quiet = 0
        while quiet < 3 and len(seen) < 10_000:
            reply = self.sqs.receive_message(QueueUrl=self.dead_letter_url, MaxNumberOfMessages=SQS_MAX_BATCH,
                                             VisibilityTimeout=0, WaitTimeSeconds=0, MessageAttributeNames=["All"])
            new = [m for m in reply.get("Messages", []) if m["MessageId"] not in seen]
            for m in new:
                reason = m.get("MessageAttributes", {}).get(REASON_ATTRIBUTE, {}).get("StringValue", "")
                seen[m["MessageId"]] = (m["Body"], reason)
            quiet = 0 if new else quiet + 1
        return list(seen.values())

    def depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attrs.values())


# ---------------------------------------------------------------------------------------------
# The local spool
# ---------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- arrival order
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    invisible_until REAL NOT NULL DEFAULT 0,    -- epoch seconds; visible when <= now
    receipt TEXT,                               -- the current delivery's receipt
    receive_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (invisible_until, seq);
CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class SpoolQueue:
    """A durable queue in one SQLite file (module docstring: why, and where it is safe).

    Times are wall-clock epoch seconds (``clock``), because two processes must agree on when a
    message becomes visible again; a monotonic clock is per process.
    """

    POLL_S = 0.1  # how often a waiting receive looks again

    def __init__(self, path: Path, max_receives: int = 5, clock: Callable[[], float] = time.time):
        self.path, self.max_receives, self.clock = Path(path), max_receives, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: cheap for SQLite, safe across threads and forked processes.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut, not only a crash
            yield db
        finally:
            db.close()

    def send(self, body: str) -> str:
        if len(body.encode()) > MAX_BODY_BYTES:
            raise MessageTooLarge(f"message body over {MAX_BODY_BYTES} bytes")
        message_id = uuid.uuid4().hex
        with self._db() as db:
            db.execute("INSERT INTO messages (message_id, body, sent_at) VALUES (?, ?, ?)",
                       (message_id, body, self.clock()))
        return message_id

    def receive(self, max_messages: int, visibility_s: float, wait_s: float = 0) -> list[Message]:
        deadline = time.monotonic() + wait_s
        while True:
            got = self._claim(max_messages, visibility_s)
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            time.sleep(min(self.POLL_S, left))

    def _claim(self, n: int, visibility_s: float) -> list[Message]:
        """One write transaction: redrive the exhausted, then pick visible rows and stamp new receipts."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: two drainers never pick the same rows
            try:
                now = self.clock()
                db.execute("INSERT INTO dead_letters (message_id, body, reason, at) SELECT message_id, body, "
                           "'max-receives', ? FROM messages WHERE invisible_until <= ? AND receive_count >= ?",
                           (now, now, self.max_receives))
                db.execute("DELETE FROM messages WHERE invisible_until <= ? AND receive_count >= ?",
                           (now, self.max_receives))
                rows = db.execute("SELECT seq, message_id, body, receive_count FROM messages "
                                  "WHERE invisible_until <= ? ORDER BY seq LIMIT ?", (now, n)).fetchall()
                out = []
                for seq, message_id, body, count in rows:
                    receipt = secrets.token_hex(16)
                    db.execute("UPDATE messages SET receipt = ?, invisible_until = ?, receive_count = ? WHERE seq = ?",
                               (receipt, now + visibility_s, count + 1, seq))
                    out.append(Message(receipt, body, count + 1, message_id))
                db.execute("COMMIT")
                return out
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def delete(self, receipts: list[str]) -> int:
        if not receipts:
            return 0
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            deleted = sum(db.execute("DELETE FROM messages WHERE receipt = ?", (r,)).rowcount for r in receipts)
            db.execute("COMMIT")
        return deleted

    def dead_letter(self, body: str, reason: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO dead_letters (body, reason, at) VALUES (?, ?, ?)",
                       (body, reason[:1000] or "unknown", self.clock()))

    def dead_letters(self) -> list[tuple[str, str]]:
        with self._db() as db:
            return [(b, r) for b, r in db.execute("SELECT body, reason FROM dead_letters ORDER BY seq")]

    def depth(self) -> int:
        with self._db() as db:
            return db.execute("SELECT count(*) FROM messages").fetchone()[0]


def open_queue(cfg: FeedbackSettings, profile: str, home: Path) -> FeedbackQueue:
    """The queue `cfg` describes: spool (default for profile local) or sqs (default for aws)."""
    kind = cfg.queue or ("sqs" if profile == "aws" else "spool")
    if kind == "spool":
        return SpoolQueue(cfg.spool_path or Path(home) / "feedback" / "queue.sqlite", cfg.max_receives)
    if not cfg.queue_url or not cfg.dead_letter_url:
        # Without a dead-letter URL a malformed event could only stay, and come back on every drain.
        raise QueueMisconfigured("feedback.queue is sqs: set feedback.queue_url and feedback.dead_letter_url")
    import boto3
    from botocore.config import Config

    sqs = boto3.session.Session().client("sqs", region_name=cfg.region, endpoint_url=cfg.sqs_endpoint_url,
                                         config=Config(retries={"mode": "adaptive", "max_attempts": 8}))
    return SqsFeedbackQueue(sqs, cfg.queue_url, cfg.dead_letter_url)
