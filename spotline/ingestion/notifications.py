"""Object changes from S3 notifications: what an SQS message says happened, validated.

A message body is an S3 event notification (S3 → SQS directly), the same wrapped in an SNS
envelope (S3 → SNS → SQS), or an EventBridge "Object Created/Deleted" event. Each S3 record
becomes one :class:`ObjectChange` carrying bucket, key, ETag and sequencer. The sequencer is
S3's per-key ordering token; with the ETag it names one version of one object, so the event
id derived from them (:meth:`ObjectChange.event_id`) is the same however often SQS redelivers the
message, and Prefect stores and acts on it once.

Anything else is a :class:`BadNotification` with a reason the relay writes next to the message
in the dead-letter queue. ``s3:TestEvent`` (sent once when notifications are configured) is
neither: it parses to no changes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from spotline.errors import PermanentError
from spotline.ingestion.requests import BadIngestRequest, _check_path, _event_kind

# Fixed namespace for deterministic event ids (uuid5): changing it would re-fire every redelivery.
EVENT_NAMESPACE = uuid.UUID("6f1c7f0e-3a53-4d3e-9a55-2f3a0c2b9e11")
CREATED, REMOVED = "spotline.object.created", "spotline.object.removed"


class BadNotification(PermanentError):
    """A message that is not an S3 object notification Spotline can act on; set aside with the reason."""


@dataclass(frozen=True)
class ObjectChange:
    kind: Literal["created", "removed"]
    bucket: str
    key: str
    etag: str
    sequencer: str
    size: int | None = None
    event_time: str | None = None  # S3's eventTime, kept for the record

    @property
    def event_name(self) -> str:
        return CREATED if self.kind == "created" else REMOVED

    def event_id(self) -> uuid.UUID:
        """Same object version, same change -> same id, on every redelivery."""
        return uuid.uuid5(EVENT_NAMESPACE, "\x00".join([self.kind, self.bucket, self.key, self.etag, self.sequencer]))

    def resource(self) -> dict[str, str]:
        return {"prefect.resource.id": f"spotline.object.{self.bucket}/{self.key}",
                "prefect.resource.name": self.key, "spotline.bucket": self.bucket, "spotline.key": self.key}

    def payload(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "sequencer": self.sequencer,
                "size": self.size, "event_time": self.event_time}


def parse_message(body: str) -> list[ObjectChange]:
    """Every object change in one SQS message body; BadNotification says why there are none."""
    try:
        doc = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise BadNotification(f"message body is not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise BadNotification(f"message body is a JSON {type(doc).__name__}, not an object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # SNS envelope
        return parse_message(doc["Message"])
    if doc.get("Event") == "s3:TestEvent":
        return []
    if "Records" in doc:
        records = doc["Records"]
        if not isinstance(records, list) or not records:
            raise BadNotification("'Records' is not a non-empty list")
        return [_record(r, i) for i, r in enumerate(records)]
    if doc.get("source") == "aws.s3" and isinstance(doc.get("detail"), dict):
        return [_eventbridge(doc)]
    raise BadNotification("neither an S3 notification (Records[].s3), an SNS envelope, nor an EventBridge S3 event")


def _checked(kind_name: str, bucket: Any, key: Any, where: str) -> tuple[Literal["created", "removed"], str, str]:
    if not isinstance(bucket, str) or not bucket:
        raise BadNotification(f"{where}: no bucket name")
    if not isinstance(key, str) or not key or key.endswith("/"):
        raise BadNotification(f"{where}: key {key!r} does not name an object")
    try:
        kind = _event_kind(str(kind_name))
        _check_path("key", key)
    except BadIngestRequest as exc:
        raise BadNotification(f"{where}: {exc}") from None
    return kind, bucket, key


def _record(r: Any, i: int) -> ObjectChange:
    where = f"record {i}"
    try:
        s3 = r["s3"]
        kind, bucket, key = _checked(r["eventName"], s3["bucket"]["name"], unquote_plus(s3["object"]["key"]), where)
        obj = s3["object"]
        return ObjectChange(kind=kind, bucket=bucket, key=key, etag=str(obj.get("eTag", "")).strip('"'),
                            sequencer=str(obj.get("sequencer", "")), size=obj.get("size"),
                            event_time=r.get("eventTime"))
    except (KeyError, TypeError) as exc:
        raise BadNotification(f"{where}: missing field {exc}") from None


def _eventbridge(doc: dict[str, Any]) -> ObjectChange:
    d = doc["detail"]
    try:
        kind, bucket, key = _checked(doc.get("detail-type", ""), d["bucket"]["name"], d["object"]["key"], "event")
        obj = d["object"]
        return ObjectChange(kind=kind, bucket=bucket, key=key, etag=str(obj.get("etag", "")).strip('"'),
                            sequencer=str(obj.get("sequencer", "")), size=obj.get("size"), event_time=doc.get("time"))
    except (KeyError, TypeError) as exc:
        raise BadNotification(f"event: missing field {exc}") from None
