"""The SQS relay against an SQS API on loopback (moto's server mode: the one AWS fake here, since
no real SQS can run on this machine) and the real Prefect server."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from runtime.events import object_events_since
from runtime.relay import REASON_ATTRIBUTE, SqsRelay, lambda_handler
from tests.ingest.test_notifications import s3_record

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def queues(sqs_endpoint, monkeypatch):
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any; boto3 insists on some
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    name = uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=f"dlq-{name}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    main = sqs.create_queue(QueueName=f"uploads-{name}", Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
    })["QueueUrl"]
    return sqs, main, dlq


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def stored(key_prefix: str, since: datetime) -> list[dict]:
    with client() as c:
        return [e for e in object_events_since(c, since) if e["payload"]["key"].startswith(key_prefix)]


def body(*records) -> str:
    return json.dumps({"Records": list(records)})


def test_good_messages_become_events_once_and_bad_ones_are_dead_lettered_with_the_reason(queues):
    sqs, main, dlq = queues
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    p = f"corpus/relay-{time.time_ns()}/"
    sqs.send_message(QueueUrl=main, MessageBody=body(s3_record(p + "a.md"), s3_record(p + "b.md", "ObjectRemoved:Delete")))
    sqs.send_message(QueueUrl=main, MessageBody=body(s3_record(p + "a.md")))  # SQS delivers the same change twice
    sqs.send_message(QueueUrl=main, MessageBody="{not json")
    with client() as c:
        relay = SqsRelay(sqs, main, c, dead_letter_url=dlq, wait_s=1)
        totals = [relay.poll_once() for _ in range(3)]
    assert sum(t.received for t in totals) == 3 and sum(t.dead_lettered for t in totals) == 1
    events = stored(p, since)
    assert sorted((e["event"], e["payload"]["key"]) for e in events) == [
        ("spotline.object.created", p + "a.md"), ("spotline.object.removed", p + "b.md")]  # the duplicate stored once
    assert events[0]["payload"]["etag"] == "abc123" and events[0]["payload"]["sequencer"]
    assert sqs.receive_message(QueueUrl=main, WaitTimeSeconds=1).get("Messages") is None  # all deleted
    dead = sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=1)["Messages"]
    assert dead[0]["Body"] == "{not json" and "not JSON" in dead[0]["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]


def test_a_message_is_kept_until_the_prefect_server_confirms_its_events(queues):
    from prefect.client.orchestration import SyncPrefectClient

    from deployments.devserver import free_port

    sqs, main, _ = queues
    p = f"corpus/down-{time.time_ns()}/"
    sqs.send_message(QueueUrl=main, MessageBody=body(s3_record(p + "a.md")))
    with SyncPrefectClient(f"http://127.0.0.1:{free_port()}/api") as down:  # nothing listens there
        stats = SqsRelay(sqs, main, down, wait_s=1, visibility_s=1).poll_once()
    assert stats.kept_for_retry == 1 and stats.deleted == 0
    time.sleep(1.5)  # the visibility timeout passes: SQS shows the message again
    since = datetime.now(timezone.utc) - timedelta(seconds=30)
    with client() as c:
        again = SqsRelay(sqs, main, c, wait_s=2).poll_once()
    assert again.received == 1 and again.deleted == 1
    assert [e["payload"]["key"] for e in stored(p, since)] == [p + "a.md"]


def test_the_lambda_handler_reports_only_failed_messages_back_to_sqs(queues, monkeypatch):
    sqs, main, dlq = queues
    monkeypatch.setenv("SPOTLINE_RELAY_DEAD_LETTER_URL", dlq)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", queues[0].meta.endpoint_url)
    p = f"corpus/lambda-{time.time_ns()}/"
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    event = {"Records": [
        {"messageId": "m1", "body": body(s3_record(p + "a.md"))},
        {"messageId": "m2", "body": json.dumps({"Records": [s3_record(p + "../x")]})},
    ]}
    assert lambda_handler(event, None) == {"batchItemFailures": []}  # m2 was dead-lettered, not retried
    assert [e["payload"]["key"] for e in stored(p, since)] == [p + "a.md"]
    dead = sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=1)["Messages"]
    assert "'..' segment" in dead[0]["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
