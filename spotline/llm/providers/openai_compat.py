"""Any endpoint speaking the OpenAI chat-completions API (OpenAI, vLLM, Ollama, LiteLLM...).

Structured output is asked for with ``response_format: json_schema`` (servers that ignore it still
get the schema in the system message from the prompt, and the gateway validates either way).
The API key comes from the secret resolver on every call (cached with a TTL there), so a rotated
key is picked up; on 401 the cached value is dropped before the error is raised.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import httpx

from spotline.llm.providers import retry_after_seconds
from spotline.llm.types import CallTimeout, Completion, ProviderRejected, ProviderRequest, ProviderUnavailable
from spotline.secrets import SecretResolver
from spotline.settings import LLMSettings, ModelSpec


def classify_http(status: int, body: str, retry_after: str | None, what: str) -> Exception:
    detail = body[:300].replace("\n", " ")
    if status == 429:
        return ProviderUnavailable(f"{what} throttled (429): {detail}", retry_after_seconds(retry_after), throttled=True)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(f"{what} failed with {status}: {detail}", retry_after_seconds(retry_after))
    return ProviderRejected(f"{what} rejected the call ({status}): {detail}")


class OpenAICompatibleProvider:
    name = "openai"

    CALLS_PER_CLIENT = 8

    def __init__(self, settings: LLMSettings, secrets: SecretResolver, client: httpx.Client | None = None):
        self.settings, self.secrets = settings, secrets
        # One httpx pool serving dozens of threads spends most of its CPU on pool bookkeeping under
        # its lock (measured: 64 threads on one client cost 4x the CPU per call of 8 clients of 8).
        # Calls are spread round-robin over one client per 8 calls in flight.
        n = 1 if client else max(1, math.ceil(settings.concurrency.get("openai", 16) / self.CALLS_PER_CLIENT))
        self._clients = [client] if client else [
            httpx.Client(timeout=httpx.Timeout(settings.timeout_s, connect=10.0),
                         limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
            for _ in range(n)
        ]
        self._next = itertools.count()

    def complete(self, model: ModelSpec, request: ProviderRequest) -> Completion:
        base_url = (model.base_url or self.settings.openai_base_url).rstrip("/")
        key_ref = model.api_key or self.settings.openai_api_key
        body: dict[str, Any] = {
            "model": model.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
        }
        # request.stop is for completion-style base-model prompts; chat models end their turn themselves
        if request.schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema, "strict": False},
            }
        for fresh_key in (False, True):
            key = self.secrets.get(key_ref).get_secret_value()
            try:
                client = self._clients[next(self._next) % len(self._clients)]
                reply = client.post(
                    f"{base_url}/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                    **({} if request.timeout_s == self.settings.timeout_s
                       else {"timeout": httpx.Timeout(request.timeout_s, connect=10.0)}),
                )
            except httpx.TimeoutException:
                raise CallTimeout(f"{model.model_id} at {base_url} did not answer within {request.timeout_s:.0f}s") from None
            except httpx.TransportError as exc:
                raise ProviderUnavailable(f"{model.model_id} at {base_url} unreachable: {type(exc).__name__}") from None
            if reply.status_code != 401 or fresh_key:
                break
            self.secrets.invalidate(key_ref)  # the key may have been rotated: re-read it once and retry
        if reply.status_code >= 400:
            raise classify_http(reply.status_code, reply.text, reply.headers.get("retry-after"), model.model_id)
        try:
            payload = reply.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            usage = payload.get("usage") or {}
            return Completion(
                text=text,
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderUnavailable(
                f"{model.model_id} sent a malformed chat-completions reply ({type(exc).__name__}: {exc}): "
                f"{reply.text[:200]!r}"
            ) from None
