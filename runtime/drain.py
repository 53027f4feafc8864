"""The drain's watermark: which object events are already brought into the index.

Kept in the object store (``_spotline/drain/<index>.json``, spotline.storage.layout) so every
worker and every run shares it: the time of the newest drained event, plus the ids of the events
drained in the last few seconds before it (a burst can be thousands of ids: more than a Prefect
Variable holds). Reads start a little before the mark (events from several relays and
clocks need not arrive in order) and skip the ids already drained, so nothing is lost and
nothing is drained twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runtime.events import object_events_since
from spotline.storage.base import ObjectNotFound, ObjectStore

SLACK = timedelta(seconds=10)


@dataclass
class Watermark:
    index: str
    through: datetime
    ids: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, store: ObjectStore, key: str, index: str, default: datetime) -> "Watermark":
        try:
            value = json.loads(store.get(key))
        except ObjectNotFound:
            return cls(index, default)
        return cls(index, datetime.fromisoformat(value["through"]), set(value.get("ids", [])))

    def save(self, store: ObjectStore, key: str) -> None:
        value = {"index": self.index, "through": self.through.isoformat(), "ids": sorted(self.ids)}
        store.put(key, json.dumps(value).encode(), "application/json")


def pending_keys(client, mark: Watermark, bucket: str | None) -> tuple[list[str], int, Watermark]:
    """Keys of object events after the watermark (latest first wins, order kept), their event count,
    and the watermark that drains them."""
    fresh = [e for e in object_events_since(client, mark.through - SLACK, bucket) if e["id"] not in mark.ids]
    if not fresh:
        return [], 0, mark
    keys = list(dict.fromkeys(e["payload"]["key"] for e in fresh))  # the object's state now decides, not the event
    newest = max(datetime.fromisoformat(e["occurred"]) for e in fresh)
    recent = {e["id"] for e in fresh if datetime.fromisoformat(e["occurred"]) > newest - SLACK}
    if newest - mark.through < SLACK:  # the old mark's last seconds are still inside the next read
        recent |= mark.ids
    return keys, len(fresh), Watermark(mark.index, max(newest, mark.through), recent)
