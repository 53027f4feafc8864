"""Model providers: each turns a ProviderRequest into a Completion or a typed gateway error."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Protocol

from spotline.llm.types import Completion, ProviderRequest
from spotline.settings import ModelSpec


class Provider(Protocol):
    name: str

    def complete(self, model: ModelSpec, request: ProviderRequest) -> Completion:
        """One attempt, no retries (the gateway owns retries, fallbacks and the circuit breaker).
        Raises ProviderUnavailable (retry), ProviderRejected (don't) or CallTimeout."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime as dt

        return max(0.0, (parsedate_to_datetime(value) - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None
