"""Embedded vector index on LanceDB: a folder on disk, no server.

Why LanceDB: maintained, embedded (like SQLite), columnar on Arrow, atomic versioned commits (a
killed writer leaves the last committed version intact), native merge-insert (upsert by key),
deletes by predicate, and the same table can live on S3 when a small deployment wants no server.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from spotline.index.base import IndexModelMismatch
from spotline.models import ChunkRecord, DocumentState, SearchHit

log = logging.getLogger(__name__)

_MODEL_KEY, _DIM_KEY = b"spotline.embedding_model", b"spotline.dimension"


def _schema(model_id: str, dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("source_uri", pa.string()),
            pa.field("doc_version", pa.string()),
            pa.field("doc_hash", pa.string()),
            pa.field("chunk_hash", pa.string()),
            pa.field("chunk_index", pa.int32()),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
            pa.field("start_char", pa.int32()),
            pa.field("end_char", pa.int32()),
            pa.field("page_start", pa.int32()),
            pa.field("page_end", pa.int32()),
            pa.field("token_count", pa.int32()),
            pa.field("embedding_model", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    ).with_metadata({_MODEL_KEY: model_id.encode(), _DIM_KEY: str(dim).encode()})


def _quote(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


class LanceIndex:
    def __init__(self, path: Path | str, name: str = "spotline-chunks"):
        import lancedb

        self.path = Path(path)
        self.name = name
        self.db = lancedb.connect(str(self.path))
        self._table = None
        self._schema: pa.Schema | None = None

    @property
    def table(self):
        if self._table is None:
            try:
                self._table = self.db.open_table(self.name)
            except (FileNotFoundError, ValueError):
                return None
        return self._table

    def ensure(self, model_id: str, dimension: int) -> None:
        table = self.table
        if table is None:
            self._table = self.db.create_table(self.name, schema=_schema(model_id, dimension), exist_ok=True)
            table = self._table
        meta = table.schema.metadata or {}
        have_model = meta.get(_MODEL_KEY, b"").decode()
        have_dim = int(meta.get(_DIM_KEY, b"0") or 0)
        if (have_model, have_dim) != (model_id, dimension):
            raise IndexModelMismatch(self.name, have_model, have_dim, model_id, dimension)
        self._schema = table.schema

    def _columns(self, columns: list[str]) -> pa.Table:
        return self.table.to_lance().to_table(columns=columns)

    def document_states(self, uri_prefix: str | None = None) -> dict[str, DocumentState]:
        if self.table is None:
            return {}
        t = self._columns(["source_uri", "doc_version", "doc_hash", "chunk_id"])
        if uri_prefix:
            t = t.filter(pc.starts_with(t["source_uri"], uri_prefix))
        states: dict[str, DocumentState] = {}
        for uri, version, doc_hash, chunk_id in zip(*(t[c].to_pylist() for c in t.column_names)):
            s = states.get(uri) or states.setdefault(uri, DocumentState(source_uri=uri))
            s.doc_versions.add(version)
            s.doc_hashes.add(doc_hash)
            s.chunk_ids.add(chunk_id)
        return states

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        if self._schema is None:
            raise RuntimeError("call ensure(model_id, dimension) before writing")
        rows = [r.model_dump() for r in records]
        data = pa.Table.from_pylist(rows, schema=self._schema)
        (
            self.table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ids = sorted(set(chunk_ids))
        if ids and self.table is not None:
            for i in range(0, len(ids), 500):
                self.table.delete(f"chunk_id IN ({_quote(ids[i:i + 500])})")
        return len(ids)

    def delete_documents(self, source_uris: Iterable[str]) -> None:
        uris = sorted(set(source_uris))
        if uris and self.table is not None:
            for i in range(0, len(uris), 200):
                self.table.delete(f"source_uri IN ({_quote(uris[i:i + 200])})")

    def search(self, vector: Sequence[float], k: int = 5) -> list[SearchHit]:
        if self.table is None:
            return []
        rows = self.table.search(list(vector)).metric("cosine").limit(k).to_list()
        return [
            SearchHit(
                chunk_id=r["chunk_id"],
                source_uri=r["source_uri"],
                title=r["title"],
                text=r["text"],
                score=1.0 - float(r["_distance"]),  # cosine distance -> similarity
                chunk_index=r["chunk_index"],
                page_start=r["page_start"],
                start_char=r["start_char"],
                end_char=r["end_char"],
            )
            for r in rows
        ]

    def count(self) -> int:
        return 0 if self.table is None else self.table.count_rows()

    def all_records(self) -> list[dict]:
        """Every row without vectors, sorted by chunk_id: for tests and audits."""
        if self.table is None:
            return []
        cols = [f.name for f in self.table.schema if f.name != "vector"]
        return sorted(self._columns(cols).to_pylist(), key=lambda r: r["chunk_id"])

    def finalize(self) -> None:
        """Compact the many small fragments a load writes and drop versions older than a day."""
        if self.table is not None:
            self.table.optimize(cleanup_older_than=timedelta(days=1))
