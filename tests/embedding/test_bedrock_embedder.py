"""BedrockEmbedder against a FAKE Bedrock runtime endpoint, tested at the HTTP boundary.

No AWS is reachable here, so ``FakeBedrock`` below is a local HTTP server (a fake, not Bedrock)
speaking the InvokeModel wire format for Titan Text Embeddings V2: ``POST /model/{modelId}/invoke``
with a JSON body, answering ``{"embedding": [...], "inputTextTokenCount": n}``; throttling is
HTTP 429 with ``x-amzn-ErrorType: ThrottlingException`` and ``{"message": "Rate exceeded"}``.
The real boto3 ``bedrock-runtime`` client is pointed at it through ``endpoint_url``, with fake
credentials from monkeypatched environment variables, so request signing, botocore's retry
handling and error parsing are the real ones. The fake's vectors are a deterministic function of
the input text, not a language model.

To keep the file fast, botocore's adaptive client-side rate limiter is switched off in the fixture
(after a throttle it would pace this client at as little as 0.5 requests/s), and the
throttling tests use tiny backoffs. Its presence in the client config is asserted separately.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest

from tests.http_boundary import fake_aws_credentials, loopback_server, no_proxies
from spotline.embedding.base import EmbeddingError, EmbeddingUnavailable
from spotline.embedding.bedrock import BedrockEmbedder
from spotline.settings import EmbeddingSettings

MODEL = "amazon.titan-embed-text-v2:0"
FAKE_KEY_ID = "AKIAFAKEBEDROCK00000"
FAKE_SECRET = "fakeBedrockSecret/ZYXWVUTSRQPONMLKJIHGFEDCBA"


def fake_vector(text: str, dims: int) -> np.ndarray:
    """Deterministic, deliberately NOT unit-length, so the embedder's normalisation is visible."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dims) * 3.0


class FakeBedrock:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.throttle: dict[str, int] = {}  # inputText -> how many 429s before answering
        self.replies: dict[str, tuple[int, dict[str, str], bytes]] = {}  # inputText -> canned reply
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = path.strip("/").split("/")
        assert parts[0] == "model" and parts[2] == "invoke", path
        body = json.loads(raw)
        with self.lock:
            self.requests.append({"path": path, "model_id": unquote(parts[1]), "headers": headers, "body": body})
            text = body["inputText"]
            if self.throttle.get(text, 0) > 0:
                self.throttle[text] -= 1
                return 429, {"x-amzn-ErrorType": "ThrottlingException"}, b'{"message": "Rate exceeded"}'
            if text in self.replies:
                return self.replies[text]
        vec = fake_vector(text, body["dimensions"])
        reply = {"embedding": vec.tolist(), "inputTextTokenCount": len(text.split())}
        return 200, {}, json.dumps(reply).encode()


def _make_handler(fake: FakeBedrock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with fake.lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                status, headers, payload = fake.handle(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, raw
                )
            finally:
                with fake.lock:
                    fake.in_flight -= 1
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    no_proxies(monkeypatch)
    fake_aws_credentials(monkeypatch, FAKE_KEY_ID, FAKE_SECRET)
    from botocore.retries.adaptive import ClientRateLimiter

    monkeypatch.setattr(ClientRateLimiter, "on_sending_request", lambda self, request, **kwargs: None)
    state = FakeBedrock()
    with loopback_server(_make_handler(state)) as url:
        state.url = url  # type: ignore[attr-defined]
        yield state


def make_embedder(fake: FakeBedrock, dims: int = 256, concurrency: int = 4, max_attempts: int = 1,
                  **kwargs: Any) -> BedrockEmbedder:
    settings = EmbeddingSettings(
        kind="bedrock", bedrock_model_id=MODEL, bedrock_dimensions=dims, bedrock_region="us-east-1",
        bedrock_endpoint_url=fake.url, bedrock_concurrency=concurrency,  # type: ignore[attr-defined]
        bedrock_max_attempts=max_attempts,
    )
    kwargs.setdefault("backoff_base_s", 0.001)
    kwargs.setdefault("backoff_max_s", 0.005)
    return BedrockEmbedder(settings, **kwargs)


def expected(text: str, dims: int) -> np.ndarray:
    v = fake_vector(text, dims)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_embeds_in_order_normalised_with_usage(fake: FakeBedrock) -> None:
    fake.delay_s = 0.02  # long enough for the worker threads to overlap
    texts = [f"chunk number {i} " + "word " * (i % 5) for i in range(24)]
    embedder = make_embedder(fake, dims=256, concurrency=4)
    assert embedder.model_id == f"{MODEL}@256" and embedder.dimension == 256

    batch = embedder.embed(texts)

    assert batch.vectors.dtype == np.float32 and batch.vectors.shape == (24, 256)
    for row, text in zip(batch.vectors, texts):
        np.testing.assert_allclose(row, expected(text, 256), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-6)
    assert batch.usage.texts == 24 and batch.usage.requests == 24 and batch.usage.throttled == 0
    assert batch.usage.input_tokens == sum(len(t.split()) for t in texts)
    assert 1 < fake.max_in_flight <= 4  # concurrent, bounded by bedrock_concurrency

    assert len(fake.requests) == 24
    for req in fake.requests:
        assert req["model_id"] == MODEL
        assert set(req["body"]) == {"inputText", "dimensions", "normalize"}
        assert req["body"]["dimensions"] == 256 and req["body"]["normalize"] is True
        assert req["headers"]["content-type"] == "application/json"
        assert req["headers"]["accept"] == "application/json"
        assert req["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={FAKE_KEY_ID}/")
        assert "/us-east-1/bedrock/aws4_request" in req["headers"]["authorization"]
        assert FAKE_SECRET not in json.dumps(req["headers"])
    assert sorted(r["body"]["inputText"] for r in fake.requests) == sorted(texts)


def test_empty_input_makes_no_call(fake: FakeBedrock) -> None:
    batch = make_embedder(fake, dims=512).embed([])
    assert batch.vectors.shape == (0, 512) and batch.vectors.dtype == np.float32
    assert batch.usage.texts == 0 and batch.usage.requests == 0
    assert fake.requests == []


def test_throttling_is_retried_counted_and_succeeds(fake: FakeBedrock) -> None:
    texts = ["alpha", "beta", "gamma", "delta"]
    fake.throttle["beta"] = 3
    embedder = make_embedder(fake, max_attempts=1, throttle_retries=4)  # botocore: no retries of its own

    batch = embedder.embed(texts)

    assert batch.usage.throttled == 3
    assert batch.usage.requests == 4 and batch.usage.texts == 4
    assert len(fake.requests) == 4 + 3
    np.testing.assert_allclose(batch.vectors[1], expected("beta", 256), rtol=1e-6, atol=1e-7)


def test_botocore_retries_are_counted_as_throttles(fake: FakeBedrock, monkeypatch) -> None:
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    fake.throttle["beta"] = 3
    # botocore makes 2 attempts per call: throttle+throttle -> our retry -> throttle+success
    batch = make_embedder(fake, concurrency=1, max_attempts=2, throttle_retries=2).embed(["alpha", "beta"])
    assert batch.usage.throttled == 3
    assert batch.usage.requests == 2
    assert len(fake.requests) == 2 + 3


def test_throttling_that_never_clears_raises_transient_error(fake: FakeBedrock) -> None:
    # EmbeddingUnavailable, not EmbeddingError: the task retries it; no document is set aside for it.
    fake.throttle["beta"] = 100
    with pytest.raises(EmbeddingUnavailable) as err:
        make_embedder(fake, max_attempts=1, throttle_retries=2).embed(["alpha", "beta"])
    message = str(err.value)
    assert "kept throttling (ThrottlingException)" in message and "text #1" in message
    assert len([r for r in fake.requests if r["body"]["inputText"] == "beta"]) == 3
    assert FAKE_SECRET not in message and FAKE_KEY_ID not in message


@pytest.mark.parametrize(
    "reply,needle",
    [
        ({"inputTextTokenCount": 3}, "has no 'embedding' list"),
        ({"embedding": [0.1, 0.2, 0.3], "inputTextTokenCount": 3}, "dimension 3, expected 256"),
        ({"embedding": [0.0] * 256, "inputTextTokenCount": 3}, "zero or non-finite"),
        ({"embedding": "nope"}, "has no 'embedding' list"),
    ],
)
def test_malformed_reply_is_a_clear_error(fake: FakeBedrock, reply: dict[str, Any], needle: str) -> None:
    fake.replies["bad one"] = (200, {}, json.dumps(reply).encode())
    with pytest.raises(EmbeddingError) as err:
        make_embedder(fake).embed(["fine", "bad one", "also fine"])
    message = str(err.value)
    assert needle in message
    assert f"Bedrock {MODEL} reply for text #1" in message
    assert FAKE_SECRET not in message and FAKE_SECRET not in repr(err.value)


def test_non_json_reply_is_a_clear_error(fake: FakeBedrock) -> None:
    fake.replies["x"] = (200, {}, b"<html>proxy error</html>")
    with pytest.raises(EmbeddingError, match="is not JSON"):
        make_embedder(fake).embed(["x"])


def test_client_error_is_not_retried_and_names_the_code(fake: FakeBedrock) -> None:
    fake.replies["too long"] = (
        400, {"x-amzn-ErrorType": "ValidationException"}, b'{"message": "Input is too long for requested model."}'
    )
    with pytest.raises(EmbeddingError) as err:
        make_embedder(fake, throttle_retries=5).embed(["too long"])
    assert "ValidationException: Input is too long for requested model." in str(err.value)
    assert len(fake.requests) == 1
    assert FAKE_SECRET not in str(err.value)


def test_empty_text_is_rejected_before_any_call(fake: FakeBedrock) -> None:
    with pytest.raises(EmbeddingError, match="text #1 is empty"):
        make_embedder(fake).embed(["ok", ""])
    assert fake.requests == []


def test_client_configuration(fake: FakeBedrock) -> None:
    embedder = make_embedder(fake, concurrency=32, max_attempts=6)
    config = embedder.client.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 6}
    assert config.max_pool_connections >= 32
    assert config.read_timeout == 60.0
    assert embedder.client.meta.endpoint_url == fake.url  # type: ignore[attr-defined]
    assert embedder.client.meta.region_name == "us-east-1"
