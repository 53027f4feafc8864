"""Amazon Bedrock through the Converse API (Claude, Llama, Titan, Mistral... one request shape).

JSON output uses tool use: the schema becomes the input schema of one tool and ``toolChoice``
forces the model to call it, so the answer arrives as a parsed object (the gateway still
validates it). Models without tool use get the schema in the prompt and plain-text validation.

botocore's own retries are off (one attempt): the gateway retries every provider the same way,
honours Retry-After and feeds the circuit breaker, and two retry layers would multiply attempts.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from spotline.llm.providers import retry_after_seconds
from spotline.llm.types import CallTimeout, Completion, ProviderRejected, ProviderRequest, ProviderUnavailable
from spotline.errors import aws_error_kind, is_throttling
from spotline.settings import LLMSettings, ModelSpec

TOOL_NAME = "emit_output"
# Models that accept a forced tool choice (toolChoice {"tool": ...}); others get the schema as an
# instruction and the gateway's validation. Inference-profile ids carry a region prefix (us., eu.).
FORCED_TOOL_MODELS = ("anthropic.claude-3", "anthropic.claude-haiku-4", "anthropic.claude-sonnet-4",
                      "anthropic.claude-opus-4", "amazon.nova")
SCHEMA_INSTRUCTION = "Reply with only a JSON object that matches this JSON schema:\n{schema}"


def forced_tool_supported(model_id: str) -> bool:
    return any(marker in model_id for marker in FORCED_TOOL_MODELS)


class BedrockConverseProvider:
    name = "bedrock"

    def __init__(self, settings: LLMSettings, client: Any = None):
        self.settings = settings
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "bedrock-runtime",
                    region_name=self.settings.bedrock_region,
                    endpoint_url=self.settings.bedrock_endpoint_url,
                    config=Config(
                        retries={"mode": "standard", "total_max_attempts": 1},
                        connect_timeout=10,
                        read_timeout=self.settings.timeout_s,
                        max_pool_connections=max(10, self.settings.concurrency.get("bedrock", 16)),
                    ),
                )
            return self._client

    def complete(self, model: ModelSpec, request: ProviderRequest) -> Completion:
        from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

        use_tool = bool(request.schema) and forced_tool_supported(model.model_id)
        system = [{"text": m.content} for m in request.messages if m.role == "system"]
        if request.schema and not use_tool:
            system.append({"text": SCHEMA_INSTRUCTION.format(schema=json.dumps(request.schema))})
        messages = [
            {"role": m.role, "content": [{"text": m.content}]} for m in request.messages if m.role != "system"
        ]
        kwargs: dict[str, Any] = {
            "modelId": model.model_id,
            "messages": messages,
            "inferenceConfig": {"maxTokens": request.max_tokens, "temperature": request.temperature},
        }
        if system:
            kwargs["system"] = system
        # request.stop belongs to the completion-style rendering (base models); chat models end their
        # turn by themselves, and Anthropic rejects whitespace-only stop sequences.
        if use_tool:
            kwargs["toolConfig"] = {
                "tools": [{"toolSpec": {"name": TOOL_NAME, "description": "Return the answer as structured data.",
                                        "inputSchema": {"json": request.schema}}}],
                "toolChoice": {"tool": {"name": TOOL_NAME}},
            }
        try:
            reply = self.client.converse(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, message = err.get("Code", "?"), err.get("Message", "")
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            after = retry_after_seconds(headers.get("retry-after"))
            if is_throttling(exc.response):
                raise ProviderUnavailable(f"{model.model_id} throttled ({code}): {message}", after, throttled=True) from None
            if aws_error_kind(exc.response) == "transient":
                raise ProviderUnavailable(f"{model.model_id} unavailable ({code}): {message}", after) from None
            raise ProviderRejected(f"{model.model_id} rejected the call ({code}): {message}") from None
        except ReadTimeoutError:
            raise CallTimeout(f"{model.model_id} did not answer within {self.settings.timeout_s:.0f}s") from None
        except ConnectionError as exc:
            raise ProviderUnavailable(f"Bedrock unreachable: {type(exc).__name__}") from None
        except ValueError as exc:  # botocore could not parse the body
            raise ProviderUnavailable(f"{model.model_id} sent a malformed Converse reply: {exc}") from None
        try:
            content = reply["output"]["message"]["content"]
            usage = reply.get("usage") or {}
            data = None
            texts = []
            for block in content:
                if "toolUse" in block and block["toolUse"].get("name") == TOOL_NAME:
                    data = block["toolUse"]["input"]
                elif "text" in block:
                    texts.append(block["text"])
            if use_tool and data is None and not texts:
                raise KeyError("no toolUse or text block")
            text = json.dumps(data, ensure_ascii=False) if data is not None else "".join(texts)
            return Completion(
                text=text,
                input_tokens=int(usage.get("inputTokens") or 0),
                output_tokens=int(usage.get("outputTokens") or 0),
                finish_reason="length" if reply.get("stopReason") == "max_tokens" else "stop",
                data=data,
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ProviderUnavailable(f"{model.model_id} sent a malformed Converse reply (missing {exc})") from None
