"""The vector index contract. Implementations: LanceDB (local) and OpenSearch k-NN (aws)."""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence

from spotline.errors import PermanentError
from spotline.index.records import ChunkRecord, DocumentState, SearchHit


class IndexModelMismatch(PermanentError):
    """The index was built with another embedding model or dimension; mixing them corrupts search."""

    def __init__(self, index_name: str, have_model: str, have_dim: int, want_model: str, want_dim: int):
        super().__init__(
            f"index {index_name!r} holds vectors from {have_model!r} (dim {have_dim}); "
            f"refusing to add vectors from {want_model!r} (dim {want_dim}). "
            "Use a new index name or rebuild the index for the new model."
        )
        self.have_model, self.have_dim = have_model, have_dim
        self.want_model, self.want_dim = want_model, want_dim


class VectorIndex(Protocol):
    """Chunks keyed by chunk_id, searchable by cosine similarity, grouped by source_uri."""

    name: str

    def ensure(self, model_id: str, dimension: int) -> None:
        """Create the index for this model/dimension, or check an existing one matches.

        Raises IndexModelMismatch when it was built for another model or dimension.
        """

    def document_states(self, uri_prefix: str | None = None) -> dict[str, DocumentState]:
        """Per source_uri (optionally only those starting with uri_prefix): versions, hashes, chunk ids."""

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        """Insert or overwrite by chunk_id. Idempotent."""

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        """Delete by chunk id; returns how many ids were asked to be deleted."""

    def delete_documents(self, source_uris: Iterable[str]) -> None:
        """Delete every chunk of these sources."""

    def duplicated_documents(self) -> dict[str, int]:
        """Surplus rows per source URI where a chunk id is stored more than once; {} when clean."""

    def search(self, vector: Sequence[float], k: int = 5) -> list[SearchHit]:
        """Top-k chunks by cosine similarity, best first."""

    def count(self) -> int:
        """Number of chunks stored."""

    def finalize(self) -> None:
        """After a load: compact / refresh. Cheap to call when nothing changed."""
