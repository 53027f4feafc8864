"""Amazon Titan Text Embeddings V2 on Bedrock (aws profile). Plain Python, no Prefect.

Titan V2 embeds one text per ``InvokeModel`` call, so :meth:`BedrockEmbedder.embed` fans the texts
out over a thread pool of ``bedrock_concurrency`` workers and puts the vectors back in input order.

Retries happen in two layers:

1. botocore, ``adaptive`` mode, ``total_max_attempts = bedrock_max_attempts`` (throttling, 5xx,
   timeouts), with its client-side rate limiter slowing the whole client down after throttles;
2. when botocore gives up on a ``ThrottlingException`` (or ``ServiceUnavailableException``), this
   module retries that text a bounded number of times more, sleeping with full-jitter exponential
   backoff, before raising :class:`~spotline.embedding.base.EmbeddingError`.

``usage.throttled`` counts throttling responses: those seen by layer 2 plus the retries botocore
reports in ``ResponseMetadata.RetryAttempts`` (nearly always throttles, but it can include a 5xx).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from spotline.embedding.base import EmbeddingBatch, EmbeddingError, EmbeddingUnavailable, EmbeddingUsage
from spotline.errors import THROTTLING_CODES, aws_error_kind
from spotline.settings import EmbeddingSettings

log = logging.getLogger(__name__)

# Bedrock sheds load with 503 ServiceUnavailableException as well as with throttling: both back off here.
BACKOFF_CODES = THROTTLING_CODES | {"ServiceUnavailableException"}


@dataclass
class _One:
    vector: np.ndarray
    tokens: int
    throttled: int


def build_client(settings: EmbeddingSettings, read_timeout_s: float = 60.0) -> Any:
    """A ``bedrock-runtime`` client whose connection pool fits ``bedrock_concurrency`` threads."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=settings.bedrock_region,
        # total_max_attempts counts the first call too (botocore's legacy "max_attempts" key
        # counts retries only), matching the setting's name.
        retries={"mode": "adaptive", "total_max_attempts": max(1, settings.bedrock_max_attempts)},
        connect_timeout=10,
        read_timeout=read_timeout_s,
        max_pool_connections=max(10, settings.bedrock_concurrency),
    )
    return boto3.session.Session().client(
        "bedrock-runtime",
        region_name=settings.bedrock_region,
        endpoint_url=settings.bedrock_endpoint_url,
        config=config,
    )


class BedrockEmbedder:
    """:class:`~spotline.embedding.base.Embedder` for ``amazon.titan-embed-text-v2:0``."""

    def __init__(
        self,
        settings: EmbeddingSettings,
        client: Any = None,
        *,
        throttle_retries: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        read_timeout_s: float = 60.0,
    ):
        self.settings = settings
        self.bedrock_model_id = settings.bedrock_model_id
        self.dimension = int(settings.bedrock_dimensions)
        self.model_id = f"{settings.bedrock_model_id}@{self.dimension}"
        self.concurrency = max(1, settings.bedrock_concurrency)
        self.client = client if client is not None else build_client(settings, read_timeout_s)
        self.throttle_retries = max(0, throttle_retries)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        texts = list(texts)
        if not texts:
            return EmbeddingBatch(np.zeros((0, self.dimension), dtype=np.float32), EmbeddingUsage())
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise EmbeddingError(f"text #{i} is empty or not a string; Titan rejects empty input")

        results: list[_One]
        if len(texts) == 1:
            results = [self._embed_one(0, texts[0])]
        else:
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(texts)), thread_name_prefix="bedrock")
            futures: list[Future[_One]] = [pool.submit(self._embed_one, i, t) for i, t in enumerate(texts)]
            try:
                results = [f.result() for f in futures]
            finally:
                # On the first failure, drop the texts not yet started instead of spending on them.
                pool.shutdown(wait=True, cancel_futures=True)

        vectors = np.stack([r.vector for r in results]).astype(np.float32, copy=False)
        usage = EmbeddingUsage(
            texts=len(texts),
            requests=len(results),
            input_tokens=sum(r.tokens for r in results),
            throttled=sum(r.throttled for r in results),
        )
        return EmbeddingBatch(vectors=vectors, usage=usage)

    # ------------------------------------------------------------------ one text

    def _embed_one(self, index: int, text: str) -> _One:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps({"inputText": text, "dimensions": self.dimension, "normalize": True})
        throttled = 0
        attempt = 0
        while True:
            try:
                resp = self.client.invoke_model(
                    modelId=self.bedrock_model_id,
                    body=body,
                    contentType="application/json",
                    accept="application/json",
                )
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", "Unknown"))
                if code in BACKOFF_CODES:
                    throttled += 1 + _retry_attempts(exc.response)
                    if attempt < self.throttle_retries:
                        delay = random.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
                        log.debug("Bedrock %s for text #%d; retry %d in %.2fs", code, index, attempt + 1, delay)
                        time.sleep(delay)
                        attempt += 1
                        continue
                    raise EmbeddingUnavailable(
                        f"Bedrock {self.bedrock_model_id} kept throttling ({code}) text #{index} "
                        f"after {throttled} throttled attempts; lower embedding.bedrock_concurrency or "
                        "raise the account's InvokeModel quota"
                    ) from None
                message = str(err.get("Message", "")).strip()
                if aws_error_kind(exc.response) == "transient":
                    raise EmbeddingUnavailable(
                        f"Bedrock {self.bedrock_model_id} unavailable for text #{index}: {code}: {message}"
                    ) from None
                raise EmbeddingError(
                    f"Bedrock {self.bedrock_model_id} InvokeModel failed for text #{index}: {code}: {message}"
                ) from None
            except BotoCoreError as exc:  # connection, timeout: says nothing about the text
                raise EmbeddingUnavailable(
                    f"Bedrock {self.bedrock_model_id} InvokeModel failed for text #{index}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            throttled += _retry_attempts(resp)
            vector, tokens = self._parse(index, resp)
            return _One(vector=vector, tokens=tokens, throttled=throttled)

    def _parse(self, index: int, resp: dict[str, Any]) -> tuple[np.ndarray, int]:
        where = f"Bedrock {self.bedrock_model_id} reply for text #{index}"
        try:
            payload = json.loads(resp["body"].read())
        except (KeyError, ValueError, TypeError) as exc:
            raise EmbeddingError(f"{where} is not JSON ({type(exc).__name__})") from None
        if not isinstance(payload, dict):
            raise EmbeddingError(f"{where} is not a JSON object")
        embedding = payload.get("embedding")
        if not isinstance(embedding, list):
            raise EmbeddingError(f"{where} has no 'embedding' list (keys: {sorted(payload)[:10]})")
        if len(embedding) != self.dimension:
            raise EmbeddingError(
                f"{where} has an embedding of dimension {len(embedding)}, expected {self.dimension}"
            )
        try:
            vector = np.asarray(embedding, dtype=np.float64)
        except (TypeError, ValueError):
            raise EmbeddingError(f"{where} has non-numeric values in 'embedding'") from None
        norm = float(np.linalg.norm(vector))
        if not np.all(np.isfinite(vector)) or not math.isfinite(norm) or norm == 0.0:
            raise EmbeddingError(f"{where} has a zero or non-finite embedding")
        tokens = payload.get("inputTextTokenCount", 0)
        tokens = int(tokens) if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) else 0
        return (vector / norm).astype(np.float32), tokens


def _retry_attempts(response: dict[str, Any]) -> int:
    try:
        return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
    except (TypeError, ValueError, AttributeError):
        return 0
