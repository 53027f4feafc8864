"""API keys from a secrets store, cached in memory with a TTL, and scrubbed from every message.

A secret is named by a reference string in settings, never by its value:

- ``env:OPENAI_API_KEY``                 an environment variable (local development)
- ``prefect:openai-api-key``             a Prefect ``Secret`` block (a scheme the Prefect layer,
                                         ``runtime.secrets``, registers: this module knows no Prefect)
- ``secretsmanager:prod/openai#api_key`` AWS Secrets Manager (``#key`` picks a field of a JSON secret)
- ``ssm:/spotline/openai-api-key``       SSM Parameter Store (SecureString, decrypted)

Values are cached for ``ttl_s`` (5 minutes by default) so a rotation is picked up without a
restart and a busy flow doesn't call the store per request. Every value resolved is registered
with :func:`redact`, which the gateway's errors and logs pass through, so a provider that echoes
a key back in an error body can't leak it into logs, artifacts or exception text.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

from pydantic import SecretStr

from spotline.errors import PermanentError

_KNOWN: set[str] = set()
_KNOWN_LOCK = threading.Lock()
MASK = "***"


def register_secret(value: str) -> None:
    if value and len(value) >= 4:  # masking 1-3 character strings would garble ordinary text
        with _KNOWN_LOCK:
            _KNOWN.add(value)


def redact(text: str) -> str:
    """`text` with every secret value this process has resolved replaced by ***."""
    if not _KNOWN or not text:
        return text
    with _KNOWN_LOCK:
        known = sorted(_KNOWN, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text


class SecretNotFound(PermanentError, LookupError):
    """The reference names nothing (unset variable, missing field, unknown scheme): retrying won't help."""


# Schemes other layers add (scheme -> fetch(name) -> value); see register_scheme.
_SCHEMES: dict[str, Callable[[str], str]] = {}


def register_scheme(scheme: str, fetch: Callable[[str], str]) -> None:
    """Teach every resolver a new ``scheme:name`` kind, e.g. ``prefect:`` from runtime.secrets."""
    _SCHEMES[scheme] = fetch


class SecretResolver:
    """Resolves secret references with an in-memory TTL cache (thread-safe)."""

    def __init__(
        self,
        ttl_s: float = 300.0,
        *,
        region: str = "us-east-1",
        endpoint_urls: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ttl_s, self.region, self.clock = ttl_s, region, clock
        self.endpoint_urls = endpoint_urls or {}
        self._cache: dict[str, tuple[float, SecretStr]] = {}
        self._lock = threading.Lock()
        self._ref_locks: dict[str, threading.Lock] = {}
        self._clients: dict[str, Any] = {}
        self.fetches = 0  # store round trips, for tests and metrics

    def get(self, ref: str) -> SecretStr:
        now = self.clock()
        hit = self._cache.get(ref)  # a dict read is atomic: no lock on the hot path
        if hit and now - hit[0] < self.ttl_s:
            return hit[1]
        with self._lock:
            ref_lock = self._ref_locks.setdefault(ref, threading.Lock())
        with ref_lock:  # when the TTL runs out under load, one thread fetches and the others wait for it
            hit = self._cache.get(ref)
            if hit and self.clock() - hit[0] < self.ttl_s:
                return hit[1]
            return self._refresh(ref)

    def _refresh(self, ref: str) -> SecretStr:
        now = self.clock()
        value = self._fetch(ref)
        register_secret(value)
        secret = SecretStr(value)
        with self._lock:
            self._cache[ref] = (now, secret)
            self.fetches += 1
        return secret

    def invalidate(self, ref: str | None = None) -> None:
        """Forget one cached value (e.g. after a 401: the key may have rotated) or all of them."""
        with self._lock:
            if ref is None:
                self._cache.clear()
            else:
                self._cache.pop(ref, None)

    def _fetch(self, ref: str) -> str:
        scheme, _, name = ref.partition(":")
        if not name:
            raise SecretNotFound(f"secret reference {ref!r} must look like scheme:name (env, prefect, secretsmanager, ssm)")
        if scheme == "env":
            value = os.environ.get(name)
            if not value:
                raise SecretNotFound(f"environment variable {name} is not set")
            return value
        if scheme in _SCHEMES:
            return _SCHEMES[scheme](name)
        if scheme == "secretsmanager":
            secret_id, _, field = name.partition("#")
            reply = self._client("secretsmanager").get_secret_value(SecretId=secret_id)
            value = reply.get("SecretString")
            if value is None:
                raise SecretNotFound(f"secret {secret_id} has no SecretString")
            if field:
                try:
                    value = json.loads(value)[field]
                except (ValueError, KeyError, TypeError):
                    raise SecretNotFound(f"secret {secret_id} is not a JSON object with a {field!r} field") from None
            return str(value)
        if scheme == "ssm":
            reply = self._client("ssm").get_parameter(Name=name, WithDecryption=True)
            return reply["Parameter"]["Value"]
        hint = " (import runtime to register prefect:)" if scheme == "prefect" else ""
        raise SecretNotFound(f"unknown secret scheme {scheme!r} in {ref!r}{hint}")

    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                self._clients[service] = boto3.session.Session().client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoint_urls.get(service),
                    config=Config(retries={"mode": "standard", "total_max_attempts": 5}),
                )
            return self._clients[service]
