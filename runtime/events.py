"""Spotline's events on the Prefect server: emit them so we know they were stored, and read them back.

Self-hosted Prefect has no webhooks; it takes events on its API. ``POST /api/events`` answers 204
once the server has *queued* an event, not stored it, and the websocket client confirms nothing
per event. A relay that deletes an SQS message on that answer could lose it, so :func:`emit`
posts, then reads the events back by id until all of them are stored (or raises a transient
error: the message stays in the queue and comes back). Event ids are deterministic
(spotline.ingestion.notifications), so posting the same change twice stores it once and fires
triggers once.

:func:`object_events_since` is how the ``ingest-on-upload`` flow drains what is pending: the event
store is the queue, so a change the deployment trigger did not fire for (it fires once per
window) is still found here.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import httpx

from spotline.errors import TransientError
from spotline.ingestion.notifications import CREATED, REMOVED, ObjectChange

OBJECT_EVENTS = (CREATED, REMOVED)


class EventsNotStored(TransientError):
    """The server did not confirm the events in time; the caller keeps the source message for a retry."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def to_event(change: ObjectChange, occurred: datetime | None = None) -> dict[str, Any]:
    # `occurred` is when the relay saw the change, not S3's eventTime (kept in the payload): a message
    # SQS delivers late must still land after the drain's watermark, never before it.
    return {"id": str(change.event_id()), "occurred": (occurred or _now()).isoformat(), "event": change.event_name,
            "resource": change.resource(), "related": [], "payload": change.payload()}


def emit(client, events: list[dict[str, Any]], confirm_timeout_s: float = 15.0, attempts: int = 4) -> None:
    """Post events to the server and return once every one of them is stored."""
    if not events:
        return
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            response = client._client.post("/events", json=events)
            if response.status_code >= 500 or response.status_code == 429:
                raise EventsNotStored(f"the Prefect API answered {response.status_code} to {len(events)} event(s)")
            response.raise_for_status()
            break
        except (EventsNotStored, OSError, httpx.RequestError) as exc:  # httpx's transport errors are not OSErrors
            if attempt == attempts:
                raise EventsNotStored(f"could not post {len(events)} event(s): {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a refusal (4xx): posting it again changes nothing
            raise EventsNotStored(f"could not post {len(events)} event(s): {type(exc).__name__}: {exc}") from None
        time.sleep(delay)
        delay *= 2
    wanted = {e["id"] for e in events}
    since = min(datetime.fromisoformat(e["occurred"]) for e in events) - timedelta(seconds=1)
    deadline = time.monotonic() + confirm_timeout_s
    while True:
        stored = {e["id"] for e in read_events(client, {"id": {"id": sorted(wanted)}}, since, limit=len(wanted))}
        if wanted <= stored:
            return
        if time.monotonic() > deadline:
            raise EventsNotStored(f"{len(wanted - stored)} of {len(wanted)} event(s) not stored after "
                                  f"{confirm_timeout_s:.0f} s")
        time.sleep(0.25)


def read_events(client, extra_filter: dict[str, Any], since: datetime, until: datetime | None = None,
                limit: int = 200) -> Iterable[dict[str, Any]]:
    """Events matching the filter, oldest first, across pages."""
    body = {"filter": {"occurred": {"since": since.isoformat(), "until": (until or _now() + timedelta(minutes=5)).isoformat()},
                       "order": "ASC", **extra_filter}, "limit": min(max(limit, 1), 50)}  # the API caps a page at 50
    response = client._client.post("/events/filter", json=body)
    response.raise_for_status()
    page = response.json()
    while True:
        yield from page.get("events", [])
        token = page.get("next_page")
        if not token:
            return
        response = client._client.get(token)
        response.raise_for_status()
        page = response.json()


def object_events_since(client, since: datetime, bucket: str | None = None) -> list[dict[str, Any]]:
    """Every object created / removed event the server stored after `since`, oldest first."""
    # The bucket is matched here, not with the API's resource-label filter: that filter reads the
    # server's event_resources table, which a burst can leave short. Seen on Prefect 3.8.8 with
    # SQLite: 500 object events stored, 480 resource rows, so a labelled query returned 480 and 20
    # uploads were never drained (tests/operations/test_uploads.py). The events table has them all.
    extra: dict[str, Any] = {"event": {"name": list(OBJECT_EVENTS)}}
    events = list(read_events(client, extra, since))
    if bucket:
        events = [e for e in events if (e.get("resource") or {}).get("spotline.bucket") == bucket]
    return events
