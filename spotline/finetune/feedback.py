"""One feedback event as the product sends it, checked before anything keeps it.

A user rates an answer (thumbs up or down) and may type what the answer should have been. The
product puts one JSON object per click on a queue (SQS in aws, the local spool otherwise):

    {"id": "...", "ts": "2026-11-30T09:12:00Z", "user": "...", "prompt": "...", "response": "...",
     "rating": "down", "correction": "...", "model_version": "..."}

Decisions, so producers and the trainer agree on them:

- ``rating`` is ``"up"`` or ``"down"`` and nothing else. Accepting +1/-1, ``thumbs_up`` or
  ``"DOWN"`` would mean guessing at every producer's dialect; one spelling, and a clear reason in
  the dead-letter queue for any other, costs a producer one fix.
- ``ts`` must carry a time zone; a naive time is refused, not taken as UTC. The event's UTC day
  decides which partition stores it, and a producer sending local wall-clock time would file
  events under the wrong day without anyone noticing. A ``ts`` more than a day ahead is refused
  too: the feedback dataset's ``latest`` pointer only moves forward, and one event stamped 9999
  would pin it there for ever.
- ``kind`` says what an event is good for. Only a thumbs-down with a non-empty correction is a
  training pair (``correction``: prompt -> what the answer should have been). A thumbs-down
  without one is a ``complaint``: kept, counted, never trained on (there is nothing to learn
  *towards*). A thumbs-up is ``praise``, even with a correction attached: the user said the
  answer was fine, so the text is an aside, not a target.
- Fields the model does not name are ignored and never stored: a producer adding a field does
  not dead-letter every event, and nothing unscrubbed slips into the dataset through it.

A malformed event raises :class:`BadFeedback` with a short, stable ``reason`` that names the
field and the rule, never the value: reasons end up in the dead-letter queue's attributes, in
logs and in artifacts, and the values are user text.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from spotline.errors import PermanentError

MAX_TEXT_CHARS = 20_000
MAX_BODY_BYTES = 256 * 1024  # SQS's own message limit: the spool refuses bigger bodies the same way
FUTURE_SLACK = timedelta(days=1)  # producer clocks drift; a day ahead is not drift

Kind = Literal["correction", "complaint", "praise"]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class BadFeedback(PermanentError):
    """An event that can never be stored as it is: it goes to the dead-letter destination."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    # Opaque ids (UUIDs, ULIDs): the id is stored as is and de-duplicates redeliveries, so it must
    # not be anything personal. The character set keeps e-mail addresses and spaces out.
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")
    ts: AwareDatetime
    user: str = Field(min_length=1, max_length=256)
    prompt: Text
    response: Text = ""
    rating: Literal["up", "down"]
    correction: Text | None = None
    model_version: str = Field(min_length=1, max_length=128)

    @field_validator("ts")
    @classmethod
    def _utc(cls, ts: datetime, info) -> datetime:
        ts = ts.astimezone(timezone.utc)
        now = (info.context or {}).get("now") or datetime.now(timezone.utc)
        if ts > now + FUTURE_SLACK:
            raise ValueError("is more than a day in the future")
        return ts

    @field_validator("prompt", "user")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank")
        return value

    @field_validator("correction")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value is not None and value.strip() else None

    @property
    def kind(self) -> Kind:
        if self.rating == "up":
            return "praise"
        return "correction" if self.correction else "complaint"

    @property
    def day(self) -> str:
        """The UTC day that partitions the dataset (``YYYY-MM-DD``, a dataset version name)."""
        return self.ts.date().isoformat()


def parse(body: str | bytes, now: datetime | None = None) -> FeedbackEvent:
    """One queue message body as an event; raises BadFeedback with a reason that holds no value."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        raise BadFeedback("too-large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadFeedback("not-utf8") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadFeedback("not-json") from None
    if not isinstance(data, dict):
        raise BadFeedback("not-an-object")
    try:
        return FeedbackEvent.model_validate(data, context={"now": now})
    except ValidationError as exc:
        raise BadFeedback(_reason(exc)) from None  # the error's own text repeats the input


def _reason(exc: ValidationError) -> str:
    """``schema: field 'rating': Input should be 'up' or 'down'``, for the first two problems.

    Pydantic's messages describe the rule, not the input; a message that contains the input
    anyway is replaced by the error type, so no value can leak through a reason."""
    parts = []
    for err in exc.errors(include_url=False)[:2]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        if err["type"] == "missing":
            parts.append(f"field {where!r} is missing")
            continue
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        value = err.get("input")
        if isinstance(value, (str, int, float)) and len(str(value)) >= 3 and str(value) in msg:
            msg = err["type"]
        parts.append(f"field {where!r}: {msg}")
    more = f" (+{exc.error_count() - 2} more)" if exc.error_count() > 2 else ""
    return "schema: " + "; ".join(parts) + more


