"""Build every backend from Settings, once per process.

Tasks call ``get_resources()`` instead of receiving clients as parameters: backends are not
serialisable, and a Prefect worker process should load the embedding model once, not per task.
Heavy pieces (the embedding model) load only when first used, so a run with nothing to embed
never imports torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from spotline.settings import PROJECT_ROOT, Settings, get_settings
from spotline.storage import ObjectStore, make_store


@dataclass(frozen=True)
class EmbedderSpec:
    model_id: str
    dimension: int
    max_tokens: int  # including the model's special tokens


@dataclass
class Resources:
    settings: Settings
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def store(self) -> ObjectStore:
        return make_store(self.settings.store)

    @cached_property
    def index(self):
        s = self.settings.index
        if s.kind == "opensearch":
            from spotline.index.opensearch import OpenSearchIndex

            return OpenSearchIndex(s)
        from spotline.index.lance import LanceIndex

        return LanceIndex(s.path, s.name)

    @cached_property
    def embedder_spec(self) -> EmbedderSpec:
        e = self.settings.embedding
        if e.kind == "bedrock":
            return EmbedderSpec(f"{e.bedrock_model_id}@{e.bedrock_dimensions}", e.bedrock_dimensions, 8192)
        from spotline.embedding.local import describe_local

        return EmbedderSpec(*describe_local(e))

    @property
    def embedder(self):
        with self._lock:
            if "_embedder" not in self.__dict__:
                e = self.settings.embedding
                if e.kind == "bedrock":
                    from spotline.embedding.bedrock import BedrockEmbedder

                    self.__dict__["_embedder"] = BedrockEmbedder(e)
                else:
                    from spotline.embedding.local import LocalEmbedder

                    self.__dict__["_embedder"] = LocalEmbedder(e)
            return self.__dict__["_embedder"]

    @cached_property
    def tokenizer_path(self) -> Path:
        """The embedding model's tokenizer. Titan's is not published: its chunks are counted with
        MiniLM's WordPiece as a proxy, far below Titan's 8,192-token limit (the bundled copy)."""
        if self.settings.embedding.kind == "local":
            from spotline.embedding.local import model_path

            return model_path(self.settings.embedding) / "tokenizer.json"
        return PROJECT_ROOT / "spotline" / "assets" / "wordpiece-tokenizer.json"

    @cached_property
    def chunker(self):
        from spotline.ingestion.chunking import Chunker

        c = self.settings.chunking
        limit = self.embedder_spec.max_tokens - 2  # [CLS] ... [SEP]
        if c.chunk_tokens > limit:
            raise ValueError(f"chunking.chunk_tokens={c.chunk_tokens} exceeds the model's limit of {limit} tokens")
        return Chunker.from_file(self.tokenizer_path, c.chunk_tokens, c.overlap_tokens)

    @cached_property
    def embedding_cache(self):
        from spotline.embedding.cache import EmbeddingCache

        return EmbeddingCache(
            self.store, self.embedder_spec.model_id, self.settings.layout.embedding_cache
        )


    def release(self) -> None:
        """Stop heavy helpers at once (embedding worker processes), e.g. when the process is told
        to stop. Safe from a signal handler: it takes no lock a running call could hold."""
        embedder = self.__dict__.get("_embedder")
        terminate = getattr(embedder, "terminate", None)
        if terminate is not None:
            terminate()

    @cached_property
    def datasets(self):
        """Versioned datasets (spotline.storage.datasets) in this object store."""
        from spotline.storage.datasets import Datasets

        return Datasets(self.store, self.settings.layout)

    @cached_property
    def secrets(self):
        """One secret resolver (env:, prefect:, secretsmanager:, ssm:) with its TTL cache, for every user."""
        from spotline.secrets import SecretResolver

        return SecretResolver(self.settings.llm.secret_ttl_s, region=self.settings.llm.bedrock_region)

    @cached_property
    def gateway(self):
        """The LLM gateway (spotline.llm): providers load lazily, the cache lives in the object store."""
        from spotline.llm.gateway import Gateway

        return Gateway(self.settings, self.store, secrets=self.secrets)


_resources: dict[int, Resources] = {}


def get_resources(settings: Settings | None = None) -> Resources:
    settings = settings or get_settings()
    key = id(settings)
    if key not in _resources:
        _resources[key] = Resources(settings)
    return _resources[key]
