"""One answer to "is this worth retrying?", for every layer.

Every Spotline error derives from :class:`TransientError` (the world was briefly unkind:
throttling, a 5xx, a dead connection, a busy worker pool: the same call may succeed later) or
:class:`PermanentError` (the input or the configuration is wrong: repeating the call repeats the
failure). Retry logic (runtime.retry for Prefect tasks, the per-document set-aside decision in
ingestion) reads only :func:`classify`, which knows these two bases and the few foreign
exceptions Spotline meets (botocore, OpenSearch, sockets). The AWS error codes that mean
"slow down" or "try again" are listed here and nowhere else.

Pattern from dlt (dlt/common/exceptions.py): a terminal / transient base on every error.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["transient", "permanent", "unknown"]


class SpotlineError(Exception):
    """Root of Spotline's own errors. Never raised as such: pick one of the two bases below."""


class TransientError(SpotlineError):
    """Worth retrying as is: nothing about the input is wrong."""


class PermanentError(SpotlineError):
    """Retrying the same call gives the same failure: set the item aside or fail the run."""


# AWS error codes that ask the caller to slow down (S3, Bedrock, Secrets Manager, SSM, SQS, ECS).
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "ServiceQuotaExceededException", "ProvisionedThroughputExceededException",
})
# AWS error codes for a service that is briefly unable to answer.
UNAVAILABLE_CODES = frozenset({
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
    "InternalServerError", "InternalServerException", "RequestTimeout", "RequestTimeoutException",
    "RequestTimeTooSkewed", "ModelNotReadyException", "ModelTimeoutException", "ModelStreamErrorException",
})
TRANSIENT_CODES = THROTTLING_CODES | UNAVAILABLE_CODES

# Foreign exceptions that say "a bug or a bad input", never "try later".
_PROGRAMMING = (ValueError, TypeError, AssertionError, AttributeError, NameError, NotImplementedError,
                KeyError, IndexError, ImportError)


def aws_error_kind(response: dict) -> Kind:
    """Transient for throttling, 429 and 5xx; permanent for any other AWS error response."""
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in TRANSIENT_CODES or status == 429 or status >= 500:
        return "transient"
    return "permanent"


def is_throttling(response: dict) -> bool:
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code in THROTTLING_CODES or status == 429


def classify(exc: BaseException) -> Kind:
    """transient / permanent when Spotline knows; unknown for anything else.

    Callers decide what unknown means for them: a Prefect task spends its bounded retries on it
    (a surprise is more often the environment than the code); a single document is set aside.
    """
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, PermanentError):
        return "permanent"
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - botocore is a dependency
        BotoCoreError = ClientError = ()  # type: ignore[assignment,misc]
    if ClientError and isinstance(exc, ClientError):
        return aws_error_kind(exc.response)
    if BotoCoreError and isinstance(exc, BotoCoreError):  # connection, timeout, endpoint: not the input
        return "transient"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    kind = _opensearch_kind(exc)
    if kind:
        return kind
    if isinstance(exc, _PROGRAMMING):
        return "permanent"
    return "unknown"


def is_transient(exc: BaseException) -> bool:
    return classify(exc) == "transient"


def _opensearch_kind(exc: BaseException) -> Kind | None:
    try:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError, TransportError
    except ImportError:  # the aws extra is not installed
        return None
    if isinstance(exc, OSConnectionError):  # a subclass of TransportError: check it first
        return "transient"
    if isinstance(exc, TransportError):
        status = exc.status_code if isinstance(exc.status_code, int) else 0
        return "transient" if status == 429 or status >= 500 else "permanent"
    return None


def brief(text: object, limit: int = 500) -> str:
    """One line of at most `limit` characters for a log, an artifact or a set-aside reason.

    Cut at a word boundary with an ellipsis, never mid-word: a reader can tell that something
    follows, and "Invalid control character at" no longer looks like the whole message.
    """
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"
