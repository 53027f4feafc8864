"""Model providers: each turns a ProviderRequest into a Completion or a typed gateway error."""

from __future__ import annotations

from typing import Protocol

from spotline.llm.types import Completion, ProviderRequest
from spotline.settings import ModelSpec


class Provider(Protocol):
    name: str

    def complete(self, model: ModelSpec, request: ProviderRequest) -> Completion:
        """One attempt, no retries (the gateway owns retries, fallbacks and the circuit breaker).
        Raises ProviderUnavailable (retry), ProviderRejected (don't) or CallTimeout."""
