"""S3 notifications as SQS delivers them: direct, SNS-wrapped, EventBridge, test events and garbage."""

from __future__ import annotations

import json

import pytest

from spotline.ingestion.notifications import BadNotification, parse_message


def s3_record(key="corpus/a.md", name="ObjectCreated:Put", etag="abc123", sequencer="0055AED6DCD90281E5"):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-12-01T10:00:00.000Z", "eventName": name,
            "s3": {"bucket": {"name": "docs"}, "object": {"key": key, "size": 12, "eTag": etag, "sequencer": sequencer}}}


def test_a_direct_notification_gives_one_change_per_record_with_etag_and_sequencer():
    body = json.dumps({"Records": [s3_record("corpus/My+File%C3%A9.md"), s3_record("corpus/b.md", "ObjectRemoved:Delete")]})
    a, b = parse_message(body)
    assert (a.kind, a.bucket, a.key, a.etag, a.sequencer, a.size) == ("created", "docs", "corpus/My Fileé.md", "abc123",
                                                                      "0055AED6DCD90281E5", 12)
    assert b.kind == "removed" and b.event_name == "spotline.object.removed"


def test_the_event_id_is_the_same_on_every_redelivery_and_differs_per_version():
    body = json.dumps({"Records": [s3_record()]})
    assert parse_message(body)[0].event_id() == parse_message(body)[0].event_id()
    newer = json.dumps({"Records": [s3_record(etag="def456", sequencer="0055AED6DCD90281F0")]})
    assert parse_message(newer)[0].event_id() != parse_message(body)[0].event_id()


def test_sns_envelopes_and_eventbridge_events_are_understood():
    inner = json.dumps({"Records": [s3_record()]})
    assert parse_message(json.dumps({"Type": "Notification", "Message": inner}))[0].key == "corpus/a.md"
    eb = {"source": "aws.s3", "detail-type": "Object Deleted", "time": "2026-12-01T10:00:00Z",
          "detail": {"bucket": {"name": "docs"}, "object": {"key": "corpus/x.pdf", "etag": "e1", "sequencer": "s1"}}}
    change = parse_message(json.dumps(eb))[0]
    assert (change.kind, change.key, change.etag) == ("removed", "corpus/x.pdf", "e1")


def test_the_s3_test_event_is_no_change_and_no_error():
    assert parse_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "docs"})) == []


@pytest.mark.parametrize("body, reason", [
    ("not json at all", "not JSON"),
    ("[1, 2]", "JSON list"),
    (json.dumps({"hello": "world"}), "neither an S3 notification"),
    (json.dumps({"Records": []}), "non-empty list"),
    (json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}), "missing field"),
    (json.dumps({"Records": [s3_record(name="ObjectRestore:Completed")]}), "unsupported event"),
    (json.dumps({"Records": [s3_record(key="corpus/../../etc/passwd")]}), "'..' segment"),
    (json.dumps({"Records": [s3_record(key="corpus/folder/")]}), "does not name an object"),
])
def test_anything_else_is_refused_with_a_reason(body, reason):
    with pytest.raises(BadNotification, match=reason):
        parse_message(body)


@pytest.mark.parametrize("prefix", ["_spotline/", "_spotline", "_spotline/cache/", "/_spotline/"])
def test_uploads_may_not_write_into_spotlines_own_prefix(prefix):
    from spotline.ingestion.requests import BadIngestRequest, check_upload_prefix

    with pytest.raises(BadIngestRequest):
        check_upload_prefix(prefix, "_spotline/")


def test_an_upload_prefix_that_only_starts_like_the_system_prefix_is_allowed():
    from spotline.ingestion.requests import check_upload_prefix

    check_upload_prefix("_spotline-docs/", "_spotline/")
    check_upload_prefix("corpus/", "_spotline/")
