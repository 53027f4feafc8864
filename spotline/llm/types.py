"""The gateway's call shape, its usage record and its typed errors. Plain Python, no Prefect."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotline.errors import PermanentError, SpotlineError, TransientError
from spotline.secrets import redact


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class ProviderRequest:
    """What a provider receives. `text` is the completion-style rendering (base models); `messages`
    the chat rendering; each provider uses the one it speaks."""

    messages: tuple[Message, ...]
    text: str
    schema: dict[str, Any] | None
    max_tokens: int
    temperature: float
    stop: tuple[str, ...] = ()
    timeout_s: float = 120.0
    seed: int = 0


@dataclass
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"  # stop | length
    data: Any = None  # providers with native structured output (Bedrock tool use) fill this


@dataclass
class CallUsage:
    """One row of the usage ledger: a model tried for a call (fallbacks add rows)."""

    use: str
    provider: str
    model: str
    scope: str = ""  # the flow run (spotline.usage) whose bill this call is on
    prompt: str = ""
    prompt_version: str = ""
    prompt_hash: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = 0.0
    cache_hit: bool = False
    saved_usd: float = 0.0
    attempts: int = 0
    repairs: int = 0
    outcome: str = "ok"  # ok | schema_invalid | unavailable | rejected | circuit_open | timeout
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # flat primitives: no need for asdict's deep copies (hot path)


@dataclass
class LLMResult:
    text: str
    data: Any
    usage: CallUsage
    tried: list[CallUsage] = field(default_factory=list)  # models that failed before this one


class LLMError(SpotlineError):
    """Base of every gateway error. Messages are scrubbed of known secret values on creation."""

    outcome = "error"

    def __init__(self, message: str):
        super().__init__(redact(message))


class ProviderUnavailable(LLMError, TransientError):
    """Throttling, 5xx, timeouts, connection failures, garbled replies: worth retrying."""

    outcome = "unavailable"

    def __init__(self, message: str, retry_after_s: float | None = None, throttled: bool = False):
        super().__init__(message)
        self.retry_after_s, self.throttled = retry_after_s, throttled


class CallTimeout(ProviderUnavailable):
    outcome = "timeout"


class ProviderRejected(LLMError, PermanentError):
    """4xx other than throttling (bad request, auth, unknown model): retrying the same call won't help."""

    outcome = "rejected"


class SchemaViolation(LLMError, PermanentError):
    outcome = "schema_invalid"

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = redact(text[:2000])


class CircuitOpen(LLMError, TransientError):
    outcome = "circuit_open"


class LLMCallFailed(LLMError):
    """Every model in the use's chain failed. Flows catch this one type and count it.

    Raised as one of its two subclasses (see :func:`call_failed`), so retry logic can tell
    "every provider was busy" from "the call itself is wrong".
    """

    outcome = "failed"

    def __init__(self, use: str, tried: list[CallUsage]):
        self.use, self.tried = use, tried
        detail = "; ".join(f"{u.model}: {u.outcome} ({u.error})" for u in tried) or "no model configured"
        super().__init__(f"LLM call for use {use!r} failed on every model: {detail}")


class LLMUnavailable(LLMCallFailed, TransientError):
    """Every model was throttled, down, timed out or behind an open circuit: try again later."""


class LLMCallRejected(LLMCallFailed, PermanentError):
    """At least one model refused the call or broke the schema: the same call fails the same way."""


_BUSY = frozenset({"unavailable", "timeout", "circuit_open"})


def call_failed(use: str, tried: list[CallUsage]) -> LLMCallFailed:
    """The failure for a chain that ran out of models, typed by what the models said."""
    busy = bool(tried) and all(u.outcome in _BUSY for u in tried)
    return (LLMUnavailable if busy else LLMCallRejected)(use, tried)
