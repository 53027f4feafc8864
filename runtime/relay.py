"""S3 notifications → SQS → this relay → Prefect events (`spotline.object.created` / `.removed`).

Two ways to run the same code:
- a long-running process next to the Prefect server: ``python -m runtime.relay --queue-url URL
  [--dead-letter-url URL]`` (long polling, backoff while the server is unreachable);
- an AWS Lambda with the queue as its event source: :func:`lambda_handler` (partial batch
  responses: only the messages that failed come back).

Per message: parse (spotline.ingestion.notifications); a message that is not an S3 object
notification goes to the dead-letter queue at once with its reason (message attribute
``spotline-reason``) and is removed from the queue, so it neither blocks nor loops. Good changes
are posted as events with ids derived from bucket, key, ETag and sequencer, and the message is
deleted only after the server confirmed it stored them. A failure leaves the message in the queue:
SQS shows it again after its visibility timeout, and the queue's redrive policy dead-letters it
after maxReceiveCount (infra sets both).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.events import EventsNotStored, emit, to_event
from spotline.ingestion.notifications import BadNotification, ObjectChange, parse_message

log = logging.getLogger("spotline.relay")
REASON_ATTRIBUTE = "spotline-reason"


@dataclass
class RelayStats:
    received: int = 0
    events: int = 0
    deleted: int = 0
    dead_lettered: int = 0
    kept_for_retry: int = 0
    reasons: list[str] = field(default_factory=list)


def dead_letter(sqs, dead_letter_url: str, body: str, reason: str) -> None:
    sqs.send_message(QueueUrl=dead_letter_url, MessageBody=body,
                     MessageAttributes={REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]}})


class SqsRelay:
    def __init__(self, sqs, queue_url: str, prefect_client, dead_letter_url: str | None = None,
                 wait_s: int = 20, visibility_s: int = 60):
        self.sqs, self.queue_url, self.client = sqs, queue_url, prefect_client
        self.dead_letter_url, self.wait_s, self.visibility_s = dead_letter_url, wait_s, visibility_s

    def poll_once(self) -> RelayStats:
        """One receive (up to 10 messages), relayed; returns what happened."""
        stats = RelayStats()
        reply = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s,
                                         VisibilityTimeout=self.visibility_s, AttributeNames=["ApproximateReceiveCount"])
        messages = reply.get("Messages", [])
        stats.received = len(messages)
        good: list[tuple[dict[str, Any], list[ObjectChange]]] = []
        for m in messages:
            try:
                good.append((m, parse_message(m["Body"])))
            except BadNotification as exc:
                self._set_aside(m, str(exc), stats)
        events = [to_event(c) for _, changes in good for c in changes]
        try:
            emit(self.client, events)
        except EventsNotStored as exc:
            # Nothing is deleted: every message of the batch comes back after its visibility timeout.
            log.warning("events not confirmed by the Prefect server (%s); %d message(s) stay queued", exc, len(good))
            stats.kept_for_retry = len(good)
            return stats
        stats.events = len(events)
        for m, _ in good:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            stats.deleted += 1
        return stats

    def _set_aside(self, message: dict[str, Any], reason: str, stats: RelayStats) -> None:
        stats.reasons.append(reason)
        log.warning("message %s is not an S3 object notification: %s", message.get("MessageId"), reason)
        if self.dead_letter_url:
            dead_letter(self.sqs, self.dead_letter_url, message["Body"], reason)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
            stats.dead_lettered += 1
        # Without a dead-letter URL the message stays; the queue's redrive policy moves it later.

    def run_forever(self, stop=lambda: False) -> None:
        backoff = 1.0
        while not stop():
            try:
                stats = self.poll_once()
                backoff = 1.0 if not stats.kept_for_retry else min(backoff * 2, 60.0)
                if stats.kept_for_retry:
                    time.sleep(backoff)
            except Exception as exc:  # SQS unreachable, credentials expired: keep trying, say so
                log.warning("relay poll failed: %s: %s; retrying in %.0f s", type(exc).__name__, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 60.0)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS-triggered Lambda (ReportBatchItemFailures on): failed messages return to the queue."""
    import boto3
    from prefect.client.orchestration import get_client

    dead_letter_url = os.environ.get("SPOTLINE_RELAY_DEAD_LETTER_URL")
    sqs = boto3.client("sqs") if dead_letter_url else None
    failures, good = [], []
    for record in event.get("Records", []):
        try:
            good.append((record, parse_message(record["body"])))
        except BadNotification as exc:
            log.warning("message %s is not an S3 object notification: %s", record.get("messageId"), exc)
            if sqs is not None:
                dead_letter(sqs, dead_letter_url, record["body"], str(exc))  # then reported done: not retried
            else:
                failures.append({"itemIdentifier": record["messageId"]})
    with get_client(sync_client=True) as client:
        try:
            emit(client, [to_event(c) for _, changes in good for c in changes])
        except EventsNotStored as exc:
            log.warning("events not confirmed: %s", exc)
            failures += [{"itemIdentifier": r["messageId"]} for r, _ in good]
    return {"batchItemFailures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--dead-letter-url")
    parser.add_argument("--endpoint-url", help="an SQS-compatible endpoint (tests, LocalStack)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call drowns what matters
    import boto3
    from botocore.config import Config
    from prefect.client.orchestration import get_client

    sqs = boto3.client("sqs", region_name=args.region, endpoint_url=args.endpoint_url,
                       config=Config(retries={"mode": "adaptive", "max_attempts": 8}))
    with get_client(sync_client=True) as client:
        SqsRelay(sqs, args.queue_url, client, args.dead_letter_url).run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
