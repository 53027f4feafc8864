"""Normalise the ways an ingest can be asked for: a prefix sync, one key, or an S3 event.

S3 notifications (``Records[].s3``) URL-encode keys; EventBridge "Object Created" events do not.
Anything that does not add up is rejected with a message saying what was wrong, before any work.

Keys and prefixes are checked here, once, and not deep inside a task: a key is a path on the
local store, so ``../../etc/passwd`` or ``/etc/passwd`` must never get as far as a read, and a key
outside the configured source prefix (``other/secret.md``) is somebody else's data unless settings
say otherwise. Messages quote keys with ``repr`` so a control character shows as an escape.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel

from spotline.errors import PermanentError
from spotline.storage.layout import Layout


class BadIngestRequest(PermanentError):
    """Malformed parameters or event: the run fails fast with this message."""


class IngestRequest(BaseModel):
    mode: Literal["prefix", "key", "keys"]
    prefix: str | None = None
    key: str | None = None
    keys: list[str] = []  # mode "keys": the objects a burst of events named (each ingested or removed)
    removed: bool = False  # the key was deleted (ObjectRemoved)
    full_sync: bool = False


# One run brings at most this many named objects up to date; a bigger burst syncs the prefix.
MAX_KEYS_PER_RUN = 1000
# S3's own limit; longer keys cannot exist there and are a sign of garbage input.
MAX_KEY_BYTES = 1024


def _check_path(what: str, value: str) -> None:
    """Traversal, absolute paths, control characters and empty segments are refused for keys and prefixes."""
    # Controls (C0, DEL, C1), format characters (bidi overrides such as U+202E, zero-width ones)
    # and line/paragraph separators: invisible or misleading in a key, and never intended.
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise BadIngestRequest(f"{what} {value!r} contains a control or invisible formatting character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: bytes from a command line that were not UTF-8
        raise BadIngestRequest(f"{what} {value!r} is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise BadIngestRequest(f"{what} is {size} bytes; keys are at most {MAX_KEY_BYTES}")
    if value.startswith("/"):
        raise BadIngestRequest(f"{what} {value!r} is an absolute path; keys are relative to the bucket or store root")
    parts = value.split("/")
    if any(p in ("..", ".") for p in re.split(r"[/\\]", value)):  # backslashes too: a Windows path is a path
        raise BadIngestRequest(f"{what} {value!r} contains a '.' or '..' segment")
    if "" in parts[:-1]:  # "a//b": S3 allows it, but a folder cannot hold it and it is never intended
        raise BadIngestRequest(f"{what} {value!r} contains an empty segment ('//')")


def check_upload_prefix(prefix: str, system_prefix: str) -> None:
    """Where `spotline upload` may write: a real folder-like prefix, outside Spotline's own."""
    if not prefix.strip("/"):
        raise BadIngestRequest("prefix must name a folder, such as 'corpus/'")
    _check_path("prefix", prefix)
    if Layout(system_prefix).owns(prefix):
        raise BadIngestRequest(f"prefix {prefix!r} is inside Spotline's own prefix {system_prefix!r}")


def _check_scope(what: str, value: str, source_prefix: str, system_prefix: str, allow_outside: bool) -> None:
    if value.startswith(system_prefix):
        raise BadIngestRequest(f"{what} {value!r} is inside Spotline's own prefix {system_prefix!r}; it is never ingested")
    if not allow_outside and not value.startswith(source_prefix):
        hint = f"; did you mean {value + '/'!r}?" if (value + "/").startswith(source_prefix) and value else ""
        raise BadIngestRequest(
            f"{what} {value!r} is outside the source prefix {source_prefix!r}{hint} "
            "(set ingest.allow_outside_source_prefix to ingest other prefixes)"
        )


def _event_kind(name: str) -> Literal["created", "removed"]:
    n = name.lower().removeprefix("s3:").replace(" ", "")
    if n.startswith("objectcreated"):
        return "created"
    if n.startswith(("objectremoved", "objectdeleted", "lifecycleexpiration")):
        return "removed"
    raise BadIngestRequest(f"unsupported event {name!r}: expected ObjectCreated:* or ObjectRemoved:*")


def from_s3_event(event: dict[str, Any]) -> tuple[str, str, str]:
    """(bucket, key, event name) from an S3 notification record or an EventBridge S3 event."""
    if not isinstance(event, dict):
        raise BadIngestRequest(f"s3_event must be a JSON object, got {type(event).__name__}")
    try:
        if "Records" in event:
            records = event["Records"]
            if not isinstance(records, list) or len(records) != 1:
                raise BadIngestRequest("s3_event must carry exactly one record (one run per object)")
            r = records[0]
            return r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]), r["eventName"]
        if "detail" in event:  # EventBridge
            d = event["detail"]
            return d["bucket"]["name"], d["object"]["key"], event["detail-type"]
        if "s3" in event:  # a bare notification record
            return event["s3"]["bucket"]["name"], unquote_plus(event["s3"]["object"]["key"]), event["eventName"]
    except (KeyError, TypeError) as exc:
        raise BadIngestRequest(f"s3_event is missing field {exc}") from None
    raise BadIngestRequest("s3_event is neither an S3 notification (Records[].s3) nor an EventBridge S3 event")


def resolve_request(
    prefix: str | None,
    key: str | None,
    bucket: str | None,
    event_name: str | None,
    s3_event: dict[str, Any] | None,
    full_sync: bool | None,
    configured_bucket: str,
    default_prefix: str,
    system_prefix: str = Layout().system,
    allow_outside_prefix: bool = False,
    keys: list[str] | None = None,
) -> IngestRequest:
    """One validated request, or BadIngestRequest saying what is wrong (checked before any work)."""
    if keys is not None:
        if s3_event is not None or key is not None or prefix is not None or event_name or full_sync:
            raise BadIngestRequest("give keys alone: they are the objects to bring up to date")
        if not isinstance(keys, list) or not keys or len(keys) > MAX_KEYS_PER_RUN:
            raise BadIngestRequest(f"keys must be a list of 1 to {MAX_KEYS_PER_RUN} object keys")
        for k in keys:
            if not isinstance(k, str) or not k.strip() or k.endswith("/"):
                raise BadIngestRequest(f"key {k!r} does not name an object")
            _check_path("key", k)
            _check_scope("key", k, default_prefix, system_prefix, allow_outside_prefix)
        return IngestRequest(mode="keys", keys=sorted(set(keys)))
    if s3_event is not None:
        if key or prefix:
            raise BadIngestRequest("give either s3_event or prefix/key, not both")
        bucket, key, event_name = from_s3_event(s3_event)
    if key is not None and prefix is not None:
        raise BadIngestRequest("give either prefix (batch sync) or key (one object), not both")
    if bucket is not None and bucket != configured_bucket:
        raise BadIngestRequest(
            f"event is for bucket {bucket!r} but this deployment ingests bucket {configured_bucket!r}"
        )
    if key is not None:
        if not isinstance(key, str) or not key.strip() or key.endswith("/"):
            raise BadIngestRequest(f"key {key!r} does not name an object")
        _check_path("key", key)
        _check_scope("key", key, default_prefix, system_prefix, allow_outside_prefix)
        if full_sync:
            raise BadIngestRequest("full_sync applies to a prefix, not to a single key")
        removed = _event_kind(event_name) == "removed" if event_name else False
        return IngestRequest(mode="key", key=key, removed=removed)
    if event_name:
        raise BadIngestRequest("event_name given without a key")
    if prefix is not None:
        _check_path("prefix", prefix)
        _check_scope("prefix", prefix, default_prefix, system_prefix, allow_outside_prefix)
    return IngestRequest(mode="prefix", prefix=default_prefix if prefix is None else prefix,
                         full_sync=True if full_sync is None else full_sync)
