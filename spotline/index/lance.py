"""Embedded vector index on LanceDB's format: a folder on disk, no server.

Why LanceDB: maintained, embedded (like SQLite), columnar on Arrow, atomic versioned commits (a
killed writer leaves the last committed version intact), native merge-insert (upsert by key),
deletes by predicate, and the same table can live on S3 when a small deployment wants no server.

Concurrent writers: LanceDB's commits are atomic, but merge-insert decides "matched or new" from
the version it read, and two processes inserting the same new chunk ids each see "new" and both
append (a probe got every chunk twice). So every write holds an exclusive ``flock`` on a lock file
beside the table, and every operation opens the latest version: the second writer then sees the
first one's rows and updates them. The kernel drops a flock when its process dies, so a killed
writer never leaves a stale lock. (The lock is per machine: a table on S3 shared by several
machines needs the flow's per-index global concurrency limit, which the ingest flow always takes.)

Why pylance and not the lancedb package: a local LanceDB table *is* a Lance dataset at
``<folder>/<name>.lance``, and everything used here (create, merge-insert, delete by predicate,
count, scan, flat nearest-neighbour search, compaction) is pylance's own API, which lancedb wraps.
Importing lancedb costs a further second on every process (it loads a generated REST client for
LanceDB's namespace service), paid by every event-triggered ingest and every query. The table
stays LanceDB's: `lancedb.connect(folder).open_table(name)` reads it (tests/index prove it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from spotline.index.base import IndexModelMismatch
from spotline.index.records import ChunkRecord, DocumentState, SearchHit

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
        self.path = Path(path)
        self.name = name
        self._schema: pa.Schema | None = None
        self._lock_path = self.path / f".{name}.writer.lock"
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None

    @contextmanager
    def writing(self):
        """Exclusive writer on this table across processes (re-entrant within one)."""
        with self._lock:
            if self._lock_depth == 0:
                self.path.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # a signal interrupts the wait (PEP 475 re-raises it)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fd, self._lock_fd = self._lock_fd, None
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    @property
    def uri(self) -> str:
        return str(self.path / f"{self.name}.lance")

    def _dataset(self):
        """The table's dataset at its latest version, or None if the table does not exist yet."""
        import lance

        return lance.dataset(self.uri) if self._exists() else None

    def _exists(self) -> bool:
        """Whether the table has been created: a look at the folder, without reading a manifest."""
        return (Path(self.uri) / "_versions").is_dir()

    @property
    def table(self):
        """The dataset at its latest version (None before the first write), for tests and audits."""
        return self._dataset()

    def ensure(self, model_id: str, dimension: int) -> None:
        dataset = self._dataset()
        if dataset is None:
            import lance

            with self.writing():
                if not self._exists():  # another process may have created it while we waited
                    lance.write_dataset(_schema(model_id, dimension).empty_table(), self.uri, mode="create")
                dataset = self._dataset()
        schema = dataset.schema
        meta = schema.metadata or {}
        have_model = meta.get(_MODEL_KEY, b"").decode()
        have_dim = int(meta.get(_DIM_KEY, b"0") or 0)
        if (have_model, have_dim) != (model_id, dimension):
            raise IndexModelMismatch(self.name, have_model, have_dim, model_id, dimension)
        self._schema = schema

    def _columns(self, columns: list[str]) -> pa.Table | None:
        dataset = self._dataset()
        return None if dataset is None else dataset.to_table(columns=columns)

    def document_states(self, uri_prefix: str | None = None) -> dict[str, DocumentState]:
        t = self._columns(["source_uri", "doc_version", "doc_hash", "chunk_id"])
        if t is None:
            return {}
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
        with self.writing():
            (
                self._dataset().merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(data)
            )

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ids = sorted(set(chunk_ids))
        if ids and self._exists():
            with self.writing():
                dataset = self._dataset()  # the latest version, now that we hold the lock
                for i in range(0, len(ids), 500):
                    dataset.delete(f"chunk_id IN ({_quote(ids[i:i + 500])})")
        return len(ids)

    def delete_documents(self, source_uris: Iterable[str]) -> None:
        uris = sorted(set(source_uris))
        if uris and self._exists():
            with self.writing():
                dataset = self._dataset()
                for i in range(0, len(uris), 200):
                    dataset.delete(f"source_uri IN ({_quote(uris[i:i + 200])})")

    def duplicated_documents(self) -> dict[str, int]:
        """Surplus rows per document where a chunk id is stored more than once ({} when clean).

        Only an unserialised race (or an index written before writers were serialised) leaves
        duplicates; the caller removes those documents whole so they are re-indexed from scratch.
        """
        t = self._columns(["chunk_id", "source_uri"])
        if t is None:
            return {}
        counts = pc.value_counts(t["chunk_id"])
        dup_ids = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(dup_ids) == 0:
            return {}
        rows = pc.filter(t, pc.is_in(t["chunk_id"], value_set=dup_ids)).to_pylist()
        surplus: dict[str, int] = {}
        seen: set[str] = set()
        for r in rows:
            if r["chunk_id"] in seen:
                surplus[r["source_uri"]] = surplus.get(r["source_uri"], 0) + 1
            seen.add(r["chunk_id"])
        return surplus

    def search(self, vector: Sequence[float], k: int = 5) -> list[SearchHit]:
        # A flat nearest-neighbour scan, what LanceDB's table.search() runs on a table with no vector index.
        dataset = self._dataset()
        if dataset is None:
            return []
        query = {"column": "vector", "q": pa.array(vector, type=pa.float32()), "k": k, "metric": "cosine"}
        columns = ["chunk_id", "source_uri", "title", "text", "chunk_index", "page_start", "start_char", "end_char",
                   "_distance"]
        rows = dataset.to_table(columns=columns, nearest=query).to_pylist()
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
        dataset = self._dataset()
        return 0 if dataset is None else dataset.count_rows()

    def all_records(self) -> list[dict]:
        """Every row without vectors, sorted by chunk_id: for tests and audits."""
        dataset = self._dataset()
        if dataset is None:
            return []
        cols = [f.name for f in dataset.schema if f.name != "vector"]
        return sorted(dataset.to_table(columns=cols).to_pylist(), key=lambda r: r["chunk_id"])

    def finalize(self) -> None:
        """Compact the many small fragments a load writes and drop versions older than a day."""
        if self._exists():
            with self.writing():
                # What LanceDB's table.optimize(cleanup_older_than=...) does on a table without indices.
                dataset = self._dataset()
                dataset.optimize.compact_files()
                dataset = self._dataset()
                dataset.cleanup_old_versions(older_than=timedelta(days=1))
