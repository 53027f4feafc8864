"""The local index, written with pylance: what it stores is a LanceDB table, and using it never
costs a process the lancedb import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from spotline.index.base import IndexModelMismatch
from spotline.index.lance import LanceIndex
from spotline.index.records import ChunkRecord
from tests.conftest import ROOT

DIM = 8


def record(doc: int, i: int, vector: np.ndarray, version: str = "v1") -> ChunkRecord:
    return ChunkRecord(
        chunk_id=f"doc{doc}-{i}", source_uri=f"file:///store/doc{doc}.md", doc_version=version, doc_hash=f"h{doc}",
        chunk_hash=f"c{doc}-{i}-{version}", chunk_index=i, title=f"Doc {doc}", text=f"doc {doc} chunk {i} {version}",
        start_char=0, end_char=10, page_start=None, page_end=None, token_count=3, embedding_model="m",
        vector=vector.tolist(),
    )


def unit(rng, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def filled(tmp_path):
    rng = np.random.default_rng(7)
    index = LanceIndex(tmp_path / "index", "chunks")
    index.ensure("m", DIM)
    vectors = unit(rng, 12)
    for doc in range(3):  # one commit per document: several fragments, as a load leaves them
        index.upsert([record(doc, i, vectors[doc * 4 + i]) for i in range(4)])
    return index, vectors


def test_writes_reads_and_searches_round_trip(filled):
    index, vectors = filled
    assert index.count() == 12
    hits = index.search(vectors[5].tolist(), k=3)
    assert hits[0].chunk_id == "doc1-1" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    states = index.document_states("file:///store/doc1")
    assert list(states) == ["file:///store/doc1.md"] and states["file:///store/doc1.md"].doc_versions == {"v1"}


def test_upsert_replaces_by_chunk_id_and_deletes_by_chunk_and_document(filled):
    index, vectors = filled
    index.upsert([record(0, 0, vectors[0], version="v2")])
    assert index.count() == 12, "same chunk id: updated, not appended"
    assert index.document_states()["file:///store/doc0.md"].doc_versions == {"v1", "v2"}
    assert index.delete_chunks(["doc0-1", "doc0-2"]) == 2 and index.count() == 10
    index.delete_documents(["file:///store/doc2.md"])
    assert index.count() == 6 and "file:///store/doc2.md" not in index.document_states()
    assert index.duplicated_documents() == {}


def test_a_second_model_or_dimension_is_refused(filled):
    index, _ = filled
    with pytest.raises(IndexModelMismatch):
        LanceIndex(index.path, "chunks").ensure("other-model", DIM)
    with pytest.raises(IndexModelMismatch):
        LanceIndex(index.path, "chunks").ensure("m", DIM * 2)


def test_finalize_compacts_the_fragments_and_keeps_every_row(filled):
    index, _ = filled
    before = index.all_records()
    assert len(index.table.get_fragments()) >= 3
    index.finalize()
    assert len(index.table.get_fragments()) == 1
    assert index.all_records() == before


def test_the_table_is_a_lancedb_table_that_lancedb_reads_and_searches_alike(filled):
    import lancedb

    index, vectors = filled
    table = lancedb.connect(str(index.path)).open_table("chunks")
    assert table.count_rows() == index.count()
    theirs = table.search(vectors[9]).metric("cosine").limit(4).to_list()
    ours = index.search(vectors[9].tolist(), k=4)
    assert [r["chunk_id"] for r in theirs] == [h.chunk_id for h in ours]


def test_a_query_or_a_write_never_imports_lancedb(filled, tmp_path):
    index, vectors = filled
    script = (
        "import json, sys\n"
        "from spotline.index.lance import LanceIndex\n"
        f"index = LanceIndex({str(index.path)!r}, 'chunks')\n"
        f"index.ensure('m', {DIM})\n"
        f"hits = index.search({vectors[2].tolist()!r}, k=1)\n"
        "index.delete_chunks([hits[0].chunk_id])\n"
        "index.finalize()\n"
        "print(json.dumps({'hit': hits[0].chunk_id, 'count': index.count(), 'lancedb': 'lancedb' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"hit": "doc0-2", "count": 11, "lancedb": False}
