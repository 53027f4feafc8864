"""Feedback intake: queue -> validate -> de-duplicate -> scrub -> the feedback dataset, each event once.

The SQS side runs against moto's server mode, an AWS API fake, on loopback (no real SQS can run
on this machine); the spool is the real SQLite queue in a temporary folder; the dataset is the
real dataset writer on the local object store; the scrubber is the real persona sanitizer with
Presidio's recognizers. The only failures injected are the ones the behaviour is about: a store
whose writes fail, a sanitizer that raises.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import datetime, timezone

import pytest

from spotline.finetune.intake import (
    IntakeBusy,
    Scrubber,
    ScrubFailed,
    IntakeLease,
    corrections_since,
    drain,
    load_feedback,
)
from spotline.finetune.queues import SpoolQueue, SqsFeedbackQueue
from spotline.personas import sanitize
from spotline.personas.sanitize import Pseudonymizer
from spotline.storage.datasets import Datasets
from tests.conftest import use_settings

KEY = "feedback-test-pseudonym-key-0123456789"
DATASET = "feedback"


def event(id: str, rating: str = "down", correction: str | None = "Annual plans are refunded pro rata.",
          ts: str = "2026-11-30T10:00:00Z", user: str = "usr_1001", prompt: str = "can I get a refund?",
          **more) -> str:
    body = {"id": id, "ts": ts, "user": user, "prompt": prompt, "response": "No refunds, ever.",
            "rating": rating, "model_version": "gemma-3-270m@2026-11-01", **more}
    if correction is not None:
        body["correction"] = correction
    return json.dumps(body)


@pytest.fixture(scope="module")
def scrubber():
    """Built once: importing Presidio's recognizers is most of a second-long setup."""
    return Scrubber.build(KEY)


def sqs_queue(endpoint: str, monkeypatch) -> SqsFeedbackQueue:
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any; boto3 insists on some
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    name = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"feedback-dlq-{name}")["QueueUrl"]
    main = sqs.create_queue(QueueName=f"feedback-{name}")["QueueUrl"]
    return SqsFeedbackQueue(sqs, main, dlq)


@pytest.fixture(params=["spool", "sqs"])
def queue(request, tmp_path, monkeypatch):
    if request.param == "spool":
        return SpoolQueue(tmp_path / "queue.sqlite")
    return sqs_queue(request.getfixturevalue("sqs_endpoint"), monkeypatch)


class FailingStore:
    """The real local store, except that writing a manifest fails while `failing` is set: parts land,
    the version is never published (the store went away mid-write)."""

    def __init__(self, inner):
        self.inner, self.failing = inner, True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put(self, key, data, content_type=None):
        if self.failing and key.endswith("/manifest.json"):
            raise ConnectionError("object store unreachable")
        return self.inner.put(key, data, content_type)


# ---------------------------------------------------------------------------------------------
# The intake
# ---------------------------------------------------------------------------------------------

def test_good_events_are_stored_once_and_bad_ones_are_dead_lettered_with_their_reason(res, scrubber, sqs_endpoint,
                                                                                        monkeypatch):
    q = sqs_queue(sqs_endpoint, monkeypatch)
    for body in (event("ev-1"), event("ev-2", rating="up", correction=None, ts="2026-11-29T23:59:00Z"),
                 "{not json", event("ev-3", rating="meh"), event("ev-1"),  # SQS delivers ev-1 twice
                 event("ev-4", correction=None)):
        q.send(body)
    stats = drain(q, res.datasets, scrubber, DATASET, batch_size=4, visibility_s=30)
    assert (stats.received, stats.stored, stats.duplicates, stats.dead_lettered) == (6, 3, 1, 2)
    assert stats.batches == 2 and stats.days == ["2026-11-29", "2026-11-30"]
    assert stats.reasons == {"not-json": 1, "schema: field 'rating': Input should be 'up' or 'down'": 1}
    stored = load_feedback(res.datasets, DATASET)
    assert sorted(stored["id"]) == ["ev-1", "ev-2", "ev-4"]
    assert res.datasets.versions(DATASET) == ["2026-11-29", "2026-11-30"]  # one version per UTC day
    assert res.datasets.latest(DATASET).version == "2026-11-30"
    assert q.depth() == 0
    assert sorted(q.dead_letters()) == sorted([("{not json", "not-json"), (event("ev-3", rating="meh"),
                                               "schema: field 'rating': Input should be 'up' or 'down'")])


def test_a_duplicate_arriving_in_a_later_drain_is_stored_once(res, scrubber, queue):
    queue.send(event("ev-1"))
    first = drain(queue, res.datasets, scrubber, DATASET, visibility_s=30)
    queue.send(event("ev-1"))  # the producer retried after a timeout: same id, later
    queue.send(event("ev-2"))
    second = drain(queue, res.datasets, scrubber, DATASET, visibility_s=30)
    assert (first.stored, second.stored, second.duplicates) == (1, 1, 1)
    assert sorted(load_feedback(res.datasets, DATASET)["id"]) == ["ev-1", "ev-2"]
    assert queue.depth() == 0


def test_messages_stay_when_the_write_fails_and_come_back_to_be_stored_exactly_once(res, scrubber, queue):
    queue.send(event("ev-1"))
    queue.send(event("ev-2", ts="2026-12-01T08:00:00Z"))
    failing = FailingStore(res.store)
    with pytest.raises(ConnectionError):
        drain(queue, Datasets(failing, res.settings.layout), scrubber, DATASET, visibility_s=1)
    assert queue.depth() == 2 and res.datasets.versions(DATASET) == []  # nothing published, nothing deleted
    assert drain(queue, res.datasets, scrubber, DATASET, visibility_s=1).received == 0  # still invisible
    time.sleep(1.2)
    again = drain(queue, res.datasets, scrubber, DATASET, visibility_s=30)
    assert (again.received, again.stored) == (2, 2) and queue.depth() == 0
    assert sorted(load_feedback(res.datasets, DATASET)["id"]) == ["ev-1", "ev-2"]
    # the failed write's parts were never listed, and the republish cleaned them up
    parts = [o.key for o in res.store.list(f"{res.settings.layout.datasets}{DATASET}/") if o.key.endswith(".parquet")]
    assert len(parts) == 2


def test_pii_never_reaches_the_stored_bytes_or_the_logs_and_a_user_gets_one_pseudonym(res, scrubber, tmp_path,
                                                                                         caplog):
    caplog.set_level("DEBUG")
    q = SpoolQueue(tmp_path / "queue.sqlite")
    user = "usr_8812"
    q.send(event("ev-1", user=user, prompt=f"I'm {user}, mail me at jane.doe@example.com about my refund",
                 correction="Call us on +1 415 555 0134 and we refund the annual plan pro rata."))
    q.send(event("ev-2", user=user, prompt="is my number 020 7946 0958 on file?", rating="up", correction=None))
    assert drain(q, res.datasets, scrubber, DATASET).stored == 2
    raw = b"".join(res.store.get(o.key) for o in res.store.list(f"{res.settings.layout.datasets}{DATASET}/"))
    stored = load_feedback(res.datasets, DATASET)
    text = " ".join(str(v) for v in stored.to_numpy().ravel())
    for secret in ("jane.doe@example.com", "415 555 0134", "4155550134", "020 7946 0958", "7946 0958", user):
        assert secret.encode() not in raw and secret not in text and secret not in caplog.text
    assert b"<EMAIL_ADDRESS>" in raw  # the byte check can see the stored text: it is not vacuous
    first = stored.set_index("id")
    assert first.loc["ev-1", "prompt"] == "I'm <USER_ID>, mail me at <EMAIL_ADDRESS> about my refund"
    assert "<PHONE_NUMBER>" in first.loc["ev-1", "correction"] and "<PHONE_NUMBER>" in first.loc["ev-2", "prompt"]
    assert set(stored["user"]) == {Pseudonymizer(KEY)("user_id", user)}  # one pseudonym, the personas' kind


def test_a_failing_sanitizer_stores_nothing_and_deletes_nothing(res, scrubber, tmp_path, monkeypatch):
    q = SpoolQueue(tmp_path / "queue.sqlite")
    q.send(event("ev-1", prompt="mail jane.doe@example.com"))
    q.send("{not json")

    def broken(self, text):
        raise RuntimeError(f"cannot scrub {text!r}")  # a library error that quotes its input

    monkeypatch.setattr(sanitize.Sanitizer, "scrub", broken)
    with pytest.raises(ScrubFailed) as failed:
        drain(q, res.datasets, scrubber, DATASET, visibility_s=0.2)
    assert "jane.doe" not in str(failed.value) and failed.value.__cause__ is None and failed.value.__suppress_context__
    assert "field 'prompt' of event ev-1" in str(failed.value)
    assert res.datasets.versions(DATASET) == [] and q.depth() == 1  # only the bad one went (dead-lettered)
    monkeypatch.undo()
    time.sleep(0.25)
    assert drain(q, res.datasets, scrubber, DATASET).stored == 1 and q.depth() == 0


def test_corrections_complaints_and_praise_are_counted_apart_and_corrections_since_counts_only_newer_rows(
        res, scrubber, tmp_path):
    q = SpoolQueue(tmp_path / "queue.sqlite")
    for body in (event("c1"), event("c2", ts="2026-11-29T12:00:00Z"),
                 event("k1", correction=None), event("k2", correction="   "),  # a blank correction is none
                 event("p1", rating="up", correction=None), event("p2", rating="up")):  # up + correction: praise
        q.send(body)
    first = drain(q, res.datasets, scrubber, DATASET)
    assert (first.corrections, first.complaints, first.praise) == (2, 2, 2)
    kinds = load_feedback(res.datasets, DATASET).set_index("id")["kind"].to_dict()
    assert kinds == {"c1": "correction", "c2": "correction", "k1": "complaint", "k2": "complaint",
                     "p1": "praise", "p2": "praise"}
    mark = datetime.now(timezone.utc)
    time.sleep(0.01)
    q.send(event("c3"))  # same day as c1: that day's version is republished with it
    assert drain(q, res.datasets, scrubber, DATASET).corrections == 1
    assert corrections_since(res.datasets, DATASET, None) == 3
    assert corrections_since(res.datasets, DATASET, mark) == 1
    assert corrections_since(res.datasets, DATASET, datetime.now(timezone.utc)) == 0


def test_a_second_drain_refuses_while_another_holds_the_datasets_intake_lease(res, scrubber, tmp_path):
    q = SpoolQueue(tmp_path / "queue.sqlite")
    q.send(event("ev-1"))
    other = IntakeLease(res.datasets, DATASET, 60, lambda: datetime.now(timezone.utc))
    other.acquire()
    with pytest.raises(IntakeBusy, match="another feedback drain"):
        drain(q, res.datasets, scrubber, DATASET)
    assert q.receive(10, 30)[0].receive_count == 1  # the refused drain received nothing
    other.release()
    assert drain(q, res.datasets, scrubber, DATASET, visibility_s=0.1).received == 0  # in flight from the peek above


def test_a_dead_drains_lease_is_taken_over_once_it_expires_and_the_slow_holder_cannot_write(res, scrubber, tmp_path):
    q = SpoolQueue(tmp_path / "queue.sqlite")
    q.send(event("ev-1"))
    dead = IntakeLease(res.datasets, DATASET, 0.05, lambda: datetime.now(timezone.utc))
    dead.acquire()
    time.sleep(0.1)
    assert drain(q, res.datasets, scrubber, DATASET).stored == 1
    with pytest.raises(IntakeBusy, match="lost"):
        dead.renew()  # it would now stop before publishing, and its batch would come back


def test_the_drain_task_uses_a_spool_under_the_settings_home_and_the_personas_key(res, monkeypatch, tmp_path):
    from tasks.feedback import drain_feedback

    monkeypatch.setenv("SPOTLINE_TEST_PSEUDONYM_KEY", KEY)
    res = use_settings(monkeypatch, tmp_path, SPOTLINE_HOME=str(tmp_path / "home"),
                       SPOTLINE_PERSONAS__PSEUDONYM_KEY="env:SPOTLINE_TEST_PSEUDONYM_KEY")
    cfg = res.settings.feedback
    SpoolQueue(tmp_path / "home" / "feedback" / "queue.sqlite").send(event("ev-1", user="usr_7"))
    stats = drain_feedback.fn()
    assert stats["stored"] == 1 and stats["days"] == ["2026-11-30"]
    assert list(load_feedback(res.datasets, cfg.dataset)["user"]) == [Pseudonymizer(KEY)("user_id", "usr_7")]


# ---------------------------------------------------------------------------------------------
# The spool has SQS's semantics
# ---------------------------------------------------------------------------------------------

def test_the_spool_hides_a_received_message_until_its_visibility_timeout_runs_out(tmp_path):
    q = SpoolQueue(tmp_path / "q.sqlite")
    sent = q.send("hello")
    [first] = q.receive(10, visibility_s=0.3)
    assert q.receive(10, visibility_s=0.3) == [] and q.depth() == 1
    time.sleep(0.35)
    [again] = q.receive(10, visibility_s=30)
    assert (again.message_id, again.receive_count, first.receive_count) == (sent, 2, 1)
    assert again.receipt != first.receipt


def test_a_stale_receipt_deletes_nothing_once_the_message_was_delivered_again(tmp_path):
    q = SpoolQueue(tmp_path / "q.sqlite")
    q.send("hello")
    [old] = q.receive(1, visibility_s=0.1)
    time.sleep(0.15)
    [new] = q.receive(1, visibility_s=30)
    assert q.delete([old.receipt]) == 0 and q.depth() == 1  # the slow first holder no longer owns it
    assert q.delete([new.receipt]) == 1 and q.depth() == 0


def test_the_spool_keeps_messages_claims_and_dead_letters_across_reopening(tmp_path):
    q = SpoolQueue(tmp_path / "q.sqlite")
    q.send("a")
    q.send("b")
    q.receive(1, visibility_s=60)  # "a" is in flight
    q.dead_letter("junk", "not-json")
    del q
    reopened = SpoolQueue(tmp_path / "q.sqlite")
    assert reopened.depth() == 2 and [m.body for m in reopened.receive(10, 60)] == ["b"]
    assert reopened.dead_letters() == [("junk", "not-json")]


def test_a_message_that_keeps_failing_is_dead_lettered_after_max_receives(tmp_path):
    q = SpoolQueue(tmp_path / "q.sqlite", max_receives=2)
    q.send("poison")
    for _ in range(2):
        assert len(q.receive(1, visibility_s=0.05)) == 1
        time.sleep(0.06)
    assert q.receive(1, visibility_s=0.05) == [] and q.depth() == 0
    assert q.dead_letters() == [("poison", "max-receives")]


def _drain_ids(path, start, out):
    q = SpoolQueue(path)
    start.wait()
    got = []
    while True:
        batch = q.receive(7, visibility_s=60)
        if not batch:
            break
        got += [m.message_id for m in batch]
        time.sleep(0.005)  # the batch's work: gives the other drainer its turns on two busy cores
        q.delete([m.receipt for m in batch])
    out.put(got)


def test_two_processes_draining_one_spool_never_get_the_same_message(tmp_path):
    path = tmp_path / "q.sqlite"
    q = SpoolQueue(path)
    sent = {q.send(f"m{i}") for i in range(300)}
    ctx = multiprocessing.get_context("fork")  # the children only touch sqlite3
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_drain_ids, args=(path, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    a, b = out.get(timeout=30), out.get(timeout=30)
    for p in procs:
        p.join(timeout=10)
    assert not set(a) & set(b) and len(a) + len(b) == 300 and set(a) | set(b) == sent
    assert a and b  # both took part: the claims really were concurrent
    assert q.depth() == 0
