"""The drain's watermark: which object events are already brought into the index.

Kept in a Prefect Variable (``spotline-upload-watermark-<index>``) so every worker and every run
shares it: the time of the newest drained event, plus the ids of the events drained in the last
few seconds before it. Reads start a little before the mark (events from several relays and
clocks need not arrive in order) and skip the ids already drained, so nothing is lost and
nothing is drained twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runtime.events import object_events_since

SLACK = timedelta(seconds=10)


def _name(index: str) -> str:
    return f"spotline-upload-watermark-{index}"


@dataclass
class Watermark:
    index: str
    through: datetime
    ids: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, client, index: str, default: datetime) -> "Watermark":
        from prefect.exceptions import ObjectNotFound

        try:
            variable = client.read_variable_by_name(_name(index))
        except ObjectNotFound:
            variable = None
        if variable is None or not isinstance(variable.value, dict):
            return cls(index, default)
        value = variable.value
        return cls(index, datetime.fromisoformat(value["through"]), set(value.get("ids", [])))

    def save(self, client) -> None:
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate

        value = {"through": self.through.isoformat(), "ids": sorted(self.ids)}
        try:
            client.update_variable(VariableUpdate(name=_name(self.index), value=value))
        except Exception:
            client.create_variable(VariableCreate(name=_name(self.index), value=value))


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
