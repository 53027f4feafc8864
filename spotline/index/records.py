"""What the vector index stores and returns: chunk records, per-document state, search hits.

They are pydantic models so Prefect can hash them for cache keys and persist them as results.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from spotline.hashing import sha256_hex


class ChunkRecord(BaseModel):
    """One embedded chunk as stored in the vector index."""

    chunk_id: str
    source_uri: str
    doc_version: str
    doc_hash: str
    chunk_hash: str
    chunk_index: int
    title: str
    text: str
    start_char: int
    end_char: int
    page_start: int | None = None
    page_end: int | None = None
    token_count: int
    embedding_model: str
    vector: list[float]

    @staticmethod
    def make_id(source_uri: str, chunk_index: int, chunk_hash: str) -> str:
        """Deterministic: a retried batch overwrites the same ids instead of duplicating."""
        return sha256_hex(f"{source_uri}\x00{chunk_index}\x00{chunk_hash}")[:32]


class DocumentState(BaseModel):
    """What the index currently holds for one source document.

    More than one doc_hash means a replacement was interrupted between writing the new chunks
    and deleting the old ones; the next run finishes it.
    """

    source_uri: str
    doc_versions: set[str] = Field(default_factory=set)
    doc_hashes: set[str] = Field(default_factory=set)
    chunk_ids: set[str] = Field(default_factory=set)

    @field_serializer("doc_versions", "doc_hashes", "chunk_ids")
    def _sorted(self, values: set[str]) -> list[str]:
        # Sorted so Prefect's input hashing (cache keys) is the same in every process.
        return sorted(values)

    def is_current(self, version: str) -> bool:
        return self.doc_versions == {version} and len(self.doc_hashes) == 1


class SearchHit(BaseModel):
    chunk_id: str
    source_uri: str
    title: str
    text: str
    score: float = Field(description="cosine similarity, higher is closer")
    chunk_index: int
    page_start: int | None = None
    start_char: int
    end_char: int
