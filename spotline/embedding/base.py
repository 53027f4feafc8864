"""The embedder contract. Implementations: sentence-transformers (local) and Bedrock Titan V2 (aws)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from spotline.errors import PermanentError, TransientError


@dataclass
class EmbeddingUsage:
    """Counters a run reports: how many texts went to the model, in how many requests, how many tokens."""

    texts: int = 0
    requests: int = 0
    input_tokens: int = 0
    throttled: int = 0

    def add(self, other: "EmbeddingUsage") -> None:
        self.texts += other.texts
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.throttled += other.throttled


@dataclass
class EmbeddingBatch:
    vectors: np.ndarray  # float32, shape (n, dimension), L2-normalised
    usage: EmbeddingUsage = field(default_factory=EmbeddingUsage)


class EmbeddingError(PermanentError):
    """The embedding service refused or garbled this input: the batch is bisected to find the text
    that causes it, and that document is set aside."""


class Embedder(Protocol):
    model_id: str  # recorded in the index; e.g. "amazon.titan-embed-text-v2:0@1024"
    dimension: int

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        """Embed texts in order. Empty input returns an empty (0, dimension) array and makes no call."""


class EmbeddingUnavailable(TransientError):
    """Transient: throttled or unreachable after the client's retries. The task-level retry handles
    it; unlike EmbeddingError it says nothing about the input, so no document is set aside for it."""
