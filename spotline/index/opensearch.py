"""OpenSearch k-NN vector index (aws profile): Amazon OpenSearch Service domains or Serverless.

Plain Python, no Prefect. One OpenSearch index holds every chunk, keyed by ``chunk_id`` (the
document ``_id``), so a retried batch overwrites instead of duplicating.

Vector space: the ``vector`` field is a faiss HNSW graph in the ``innerproduct`` space.
Spotline's embedders return L2-normalised vectors, and for unit vectors the inner product *is*
the cosine similarity. We pick ``innerproduct`` over ``cosinesimil`` because:

* faiss only accepts ``cosinesimil`` from OpenSearch 2.19 on (older domains reject the mapping),
  while faiss ``innerproduct`` has been accepted for much longer;
* with faiss, ``cosinesimil`` is implemented as "normalise, then inner product" anyway, and the
  OpenSearch docs themselves advise ``innerproduct`` when vectors are already normalised;
* its score formula is the same on every engine version we may meet (the ``cosinesimil`` score
  changed across k-NN versions: ``1 / (1 + d)`` in old releases, ``(2 - d) / 2`` now).

Because correctness now depends on unit vectors, :meth:`OpenSearchIndex.upsert` rejects vectors
whose norm is not 1 (within 1e-3) and :meth:`OpenSearchIndex.search` normalises the query.
``space_type="cosinesimil"`` remains available as a constructor argument for 2.19+ clusters; the
space an existing index really uses is read back from its mapping, so scores are always decoded
with the right formula.

OpenSearch Serverless (``sigv4_service == "aoss"``) rejects index shard/replica/refresh settings
and the ``_refresh`` API, so they are left out there. Beware: public reports say Serverless
*vector search* collections also reject custom document ``_id``s in bulk index requests, the
scroll API and ``_delete_by_query``, which this backend relies on; a managed domain (``es``) is
the tested target.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from opensearchpy import OpenSearch, RequestsHttpConnection, helpers
from opensearchpy.exceptions import NotFoundError, RequestError

from spotline.errors import PermanentError, SpotlineError, TransientError
from spotline.index.base import IndexModelMismatch
from spotline.index.records import ChunkRecord, DocumentState, SearchHit
from spotline.settings import IndexSettings

log = logging.getLogger(__name__)

RETRY_ON_STATUS = (429, 502, 503, 504)
DEFAULT_SPACE_TYPE = "innerproduct"
SUPPORTED_SPACE_TYPES = ("innerproduct", "cosinesimil")
DELETE_BY_QUERY_BATCH = 500
SCAN_PAGE_SIZE = 1000
_NORM_TOLERANCE = 1e-3
_STATE_FIELDS = ["source_uri", "doc_version", "doc_hash", "chunk_id"]
_HIT_FIELDS = (
    "chunk_id", "source_uri", "title", "text", "chunk_index", "page_start", "start_char", "end_char",
)


class BulkWriteError(SpotlineError):
    """Some bulk items failed (after the client's 429 retries); the rest of the batch was written.
    Raised as one of its two subclasses: see :func:`bulk_write_error`."""

    def __init__(self, action: str, total: int, failures: list[dict[str, Any]]):
        self.failures = failures
        self.total = total
        shown = "; ".join(
            f"{f['id']}: {f['status']} {f['type']}: {f['reason']}" for f in failures[:5]
        )
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} of {total} bulk {action} operations failed: {shown}{more}")

    @property
    def failed_ids(self) -> list[str]:
        return [f["id"] for f in self.failures]


class BulkItemsRetryable(BulkWriteError, TransientError):
    """At least one item failed with 429 / 5xx / no status: the whole (idempotent) batch is retried."""


class BulkItemsRejected(BulkWriteError, PermanentError):
    """Every failed item was refused for good (4xx, e.g. a mapping error): those documents are set aside."""


def _item_status(failure: dict[str, Any]) -> int:
    try:
        return int(failure.get("status"))
    except (TypeError, ValueError):
        return 0  # unknown: treat as transient


def bulk_write_error(action: str, total: int, failures: list[dict[str, Any]]) -> BulkWriteError:
    retry = any(_item_status(f) == 429 or _item_status(f) >= 500 or _item_status(f) == 0 for f in failures)
    return (BulkItemsRetryable if retry else BulkItemsRejected)(action, total, failures)


def build_client(settings: IndexSettings) -> OpenSearch:
    """An opensearch-py client for these settings.

    Transport-level retries (``max_retries``) cover 429/502/503/504 and timeouts; note that the
    transport retries immediately, without backoff. Bulk writes add their own backoff for 429s.
    Credentials never appear in log lines or exception messages raised here.
    """
    kwargs: dict[str, Any] = dict(
        hosts=list(settings.hosts),
        connection_class=RequestsHttpConnection,
        http_compress=True,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
        retry_on_status=RETRY_ON_STATUS,
        retry_on_timeout=True,
        verify_certs=settings.verify_certs,
    )
    if settings.auth == "sigv4":
        import boto3
        from opensearchpy import AWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ValueError(
                "index.auth is 'sigv4' but the boto3 credential chain found no AWS credentials "
                "(set AWS_PROFILE, the AWS_* variables, or run with an IAM role)"
            )
        kwargs["http_auth"] = AWSV4SignerAuth(credentials, settings.region, settings.sigv4_service)
    elif settings.auth == "basic":
        if not settings.username or settings.password is None:
            raise ValueError("index.auth is 'basic' but index.username / index.password are not both set")
        kwargs["http_auth"] = (settings.username, settings.password.get_secret_value())
    return OpenSearch(**kwargs)


def score_to_similarity(score: float, space_type: str) -> float:
    """Turn an OpenSearch k-NN ``_score`` back into cosine similarity (unit vectors).

    * ``innerproduct`` (faiss/nmslib): the engine distance is ``d = -ip``; OpenSearch reports
      ``score = 1 - d = ip + 1`` when ``ip >= 0`` and ``score = 1 / (1 + d) = 1 / (1 - ip)`` when
      ``ip < 0``. Inverse: ``ip = score - 1`` if ``score >= 1`` else ``ip = 1 - 1 / score``.
    * ``cosinesimil`` (current k-NN, every engine): ``d = 1 - cos``, ``score = (2 - d) / 2 =
      (1 + cos) / 2``. Inverse: ``cos = 2 * score - 1``. (k-NN releases before the score
      unification reported ``1 / (1 + d)`` for nmslib; faiss cosinesimil only exists after it.)
    * ``l2`` (not created by Spotline, decoded for completeness): ``d = |x - y|^2 = 2 - 2 cos``
      for unit vectors, ``score = 1 / (1 + d)``. Inverse: ``cos = 1 - (1 / score - 1) / 2``.
    """
    if space_type == "innerproduct":
        return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    if space_type == "cosinesimil":
        return 2.0 * score - 1.0
    if space_type == "l2":
        return 1.0 - (1.0 / score - 1.0) / 2.0
    raise ValueError(f"cannot convert a k-NN score from space type {space_type!r} to cosine similarity")


class OpenSearchIndex:
    """:class:`~spotline.index.base.VectorIndex` on an OpenSearch k-NN index."""

    def __init__(
        self,
        settings: IndexSettings,
        client: OpenSearch | None = None,
        *,
        space_type: str = DEFAULT_SPACE_TYPE,
        bulk_max_retries: int | None = None,
        bulk_initial_backoff_s: float = 2.0,
        bulk_max_backoff_s: float = 60.0,
    ):
        if space_type not in SUPPORTED_SPACE_TYPES:
            raise ValueError(f"space_type must be one of {SUPPORTED_SPACE_TYPES}, not {space_type!r}")
        self.settings = settings
        self.name = settings.name
        self.client = client if client is not None else build_client(settings)
        self.serverless = settings.sigv4_service == "aoss"
        self._space_type = space_type
        self._index_space_type: str | None = None  # read back from an existing index's mapping
        self._dimension: int | None = None
        # Per-item 429s inside a bulk response, and whole-request 429s once the transport's own
        # (immediate) retries are spent, are retried by streaming_bulk with exponential backoff.
        self._bulk_max_retries = settings.max_retries if bulk_max_retries is None else bulk_max_retries
        self._bulk_initial_backoff_s = bulk_initial_backoff_s
        self._bulk_max_backoff_s = bulk_max_backoff_s

    # ------------------------------------------------------------------ schema

    def index_body(self, model_id: str, dimension: int) -> dict[str, Any]:
        """The create-index body: k-NN settings plus a strict mapping tagged with the model."""
        index_settings: dict[str, Any] = {
            "knn": True,
            "knn.algo_param.ef_search": self.settings.hnsw_ef_search,
        }
        if not self.serverless:
            index_settings["number_of_shards"] = self.settings.shards
            index_settings["number_of_replicas"] = self.settings.replicas
        keyword = {"type": "keyword"}
        integer = {"type": "integer"}
        return {
            "settings": {"index": index_settings},
            "mappings": {
                "_meta": {"spotline": {"embedding_model": model_id, "dimension": dimension}},
                "dynamic": "strict",
                "properties": {
                    "vector": {
                        "type": "knn_vector",
                        "dimension": dimension,
                        "method": {
                            "name": "hnsw",
                            "space_type": self._space_type,
                            "engine": "faiss",
                            "parameters": {
                                "m": self.settings.hnsw_m,
                                "ef_construction": self.settings.hnsw_ef_construction,
                            },
                        },
                    },
                    "chunk_id": keyword,
                    "source_uri": keyword,
                    "doc_version": keyword,
                    "doc_hash": keyword,
                    "chunk_hash": keyword,
                    "embedding_model": keyword,
                    "title": {"type": "text"},
                    "text": {"type": "text"},
                    "chunk_index": integer,
                    "start_char": integer,
                    "end_char": integer,
                    "page_start": integer,
                    "page_end": integer,
                    "token_count": integer,
                },
            },
        }

    def ensure(self, model_id: str, dimension: int) -> None:
        if not self.client.indices.exists(index=self.name):
            try:
                self.client.indices.create(index=self.name, body=self.index_body(model_id, dimension))
                log.info("created OpenSearch index %s for %s (dim %d)", self.name, model_id, dimension)
                self._dimension = dimension
                self._index_space_type = self._space_type
                return
            except RequestError as exc:
                # Another worker created it between our check and our create: verify theirs.
                if exc.error != "resource_already_exists_exception":
                    raise
        mappings = self._mappings()
        meta = (mappings.get("_meta") or {}).get("spotline")
        if not isinstance(meta, dict) or "embedding_model" not in meta or "dimension" not in meta:
            raise ValueError(
                f"OpenSearch index {self.name!r} exists but has no _meta.spotline mapping: it was not "
                "created by Spotline. Use another index.name or delete that index."
            )
        have_model, have_dim = str(meta["embedding_model"]), int(meta["dimension"])
        if have_model != model_id or have_dim != dimension:
            raise IndexModelMismatch(self.name, have_model, have_dim, model_id, dimension)
        self._dimension = dimension
        self._index_space_type = self._space_from_mappings(mappings)

    def _mappings(self) -> dict[str, Any]:
        resp = self.client.indices.get_mapping(index=self.name)
        # Keyed by the concrete index name (which differs from self.name behind an alias).
        entry = resp.get(self.name) or next(iter(resp.values()), {})
        return entry.get("mappings") or {}

    @staticmethod
    def _space_from_mappings(mappings: dict[str, Any]) -> str:
        vector = (mappings.get("properties") or {}).get("vector") or {}
        return (vector.get("method") or {}).get("space_type") or vector.get("space_type") or "l2"

    def _space(self) -> str:
        if self._index_space_type is None:
            try:
                self._index_space_type = self._space_from_mappings(self._mappings())
            except NotFoundError:
                return self._space_type
        return self._index_space_type

    # ------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        self._check_vectors(records)
        large = len(records) > self.settings.large_load_chunks and not self.serverless
        previous: str | None = None
        if large:
            previous = self._refresh_interval()
            if previous == "-1":
                # Another loader (or one that was killed) switched refresh off; restoring "-1"
                # would leave the index unsearchable for new writes, so put the default back.
                log.warning("index %s already had refresh_interval -1; will restore the default", self.name)
                previous = None
            self._put_refresh_interval("-1")
        try:
            actions = (
                {"_op_type": "index", "_index": self.name, "_id": r.chunk_id, "_source": r.model_dump()}
                for r in records
            )
            failures = self._run_bulk(actions)
        finally:
            if large:
                self._put_refresh_interval(previous)
        if failures:
            raise bulk_write_error("index", len(records), failures)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> int:
        ids = list(chunk_ids)
        if not ids:
            return 0
        actions = ({"_op_type": "delete", "_index": self.name, "_id": cid} for cid in ids)
        # 404 = already gone, which is what we wanted.
        failures = [f for f in self._run_bulk(actions) if f["status"] != 404]
        if failures:
            raise bulk_write_error("delete", len(ids), failures)
        return len(ids)

    def delete_documents(self, source_uris: Iterable[str]) -> None:
        uris = sorted(set(source_uris))
        params: dict[str, Any] = {"conflicts": "proceed"}
        if not self.serverless:
            params["refresh"] = True
        for start in range(0, len(uris), DELETE_BY_QUERY_BATCH):
            batch = uris[start : start + DELETE_BY_QUERY_BATCH]
            resp = self.client.delete_by_query(
                index=self.name, body={"query": {"terms": {"source_uri": batch}}}, **params
            )
            failures = resp.get("failures") or []
            if failures:
                raise bulk_write_error(
                    "delete_by_query",
                    len(batch),
                    [
                        {
                            "id": str(f.get("id", "?")),
                            "status": f.get("status", "?"),
                            "type": (f.get("cause") or {}).get("type", "?"),
                            "reason": (f.get("cause") or {}).get("reason", "?"),
                        }
                        for f in failures
                    ],
                )

    def _run_bulk(self, actions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send actions in size/count-bounded chunks; return the items that failed for good."""
        failures: list[dict[str, Any]] = []
        for ok, item in helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=self.settings.bulk_max_docs,
            max_chunk_bytes=self.settings.bulk_max_bytes,
            raise_on_error=False,
            max_retries=self._bulk_max_retries,
            initial_backoff=self._bulk_initial_backoff_s,
            max_backoff=self._bulk_max_backoff_s,
            yield_ok=False,
        ):
            if ok:
                continue
            _op, info = next(iter(item.items()))
            error = info.get("error")
            if isinstance(error, dict):
                etype, reason = error.get("type", "?"), error.get("reason", "")
            else:
                etype, reason = "error", str(error or info.get("result", ""))
            failures.append(
                {"id": str(info.get("_id", "?")), "status": info.get("status"), "type": etype, "reason": reason}
            )
        return failures

    def _check_vectors(self, records: Sequence[ChunkRecord]) -> None:
        dims = {len(r.vector) for r in records}
        if len(dims) != 1 or (self._dimension is not None and dims != {self._dimension}):
            want = self._dimension if self._dimension is not None else "one shared dimension"
            raise ValueError(f"vectors have dimensions {sorted(dims)}; index {self.name!r} expects {want}")
        if (self._index_space_type or self._space_type) != "innerproduct":
            return
        norms = np.linalg.norm(np.asarray([r.vector for r in records], dtype=np.float64), axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > _NORM_TOLERANCE)
        if bad.size:
            first = records[int(bad[0])]
            raise ValueError(
                f"{bad.size} vector(s) are not L2-normalised (e.g. chunk {first.chunk_id} has norm "
                f"{norms[bad[0]]:.4f}); the index scores by inner product, which equals cosine "
                "similarity only for unit vectors"
            )

    def _refresh_interval(self) -> str | None:
        resp = self.client.indices.get_settings(index=self.name, name="index.refresh_interval")
        for entry in resp.values():
            value = ((entry.get("settings") or {}).get("index") or {}).get("refresh_interval")
            if value is not None:
                return str(value)
        return None  # never set explicitly: restoring null puts the cluster default back

    def _put_refresh_interval(self, value: str | None) -> None:
        self.client.indices.put_settings(index=self.name, body={"index": {"refresh_interval": value}})

    # ------------------------------------------------------------------ reads

    def document_states(self, uri_prefix: str | None = None) -> dict[str, DocumentState]:
        query: dict[str, Any] = {"prefix": {"source_uri": uri_prefix}} if uri_prefix else {"match_all": {}}
        states: dict[str, DocumentState] = {}
        try:
            for hit in self._scan({"query": query, "_source": _STATE_FIELDS}):
                src = hit.get("_source") or {}
                uri = src.get("source_uri")
                if not uri:
                    continue
                state = states.get(uri)
                if state is None:
                    state = states[uri] = DocumentState(source_uri=uri)
                state.doc_versions.add(src.get("doc_version", ""))
                state.doc_hashes.add(src.get("doc_hash", ""))
                state.chunk_ids.add(src.get("chunk_id") or hit["_id"])
        except NotFoundError:
            return {}
        return states

    def duplicated_documents(self) -> dict[str, int]:
        """Never any: the chunk id is the document _id, so concurrent writers overwrite each other."""
        return {}

    def _scan(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return helpers.scan(self.client, query=body, index=self.name, size=SCAN_PAGE_SIZE, scroll="5m")

    def search(self, vector: Sequence[float], k: int = 5) -> list[SearchHit]:
        query = np.asarray(vector, dtype=np.float64)
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("query vector must be non-zero and finite")
        body = {
            "size": k,
            "_source": {"excludes": ["vector"]},
            "query": {"knn": {"vector": {"vector": (query / norm).tolist(), "k": k}}},
        }
        resp = self.client.search(index=self.name, body=body)
        space = self._space()
        hits = []
        for hit in resp.get("hits", {}).get("hits", []):
            src = hit.get("_source") or {}
            fields = {name: src.get(name) for name in _HIT_FIELDS}
            fields["chunk_id"] = fields["chunk_id"] or hit.get("_id")
            hits.append(SearchHit(score=score_to_similarity(float(hit["_score"]), space), **fields))
        return hits

    def count(self) -> int:
        try:
            return int(self.client.count(index=self.name)["count"])
        except NotFoundError:
            return 0

    def finalize(self) -> None:
        if self.serverless:
            return  # Serverless has no _refresh API; writes become searchable on their own
        try:
            # A loader killed between "refresh off" and its restore leaves -1 behind: undo it here.
            if self._refresh_interval() == "-1":
                log.warning("index %s had refresh_interval -1 after the load; restoring the default", self.name)
                self._put_refresh_interval(None)
            self.client.indices.refresh(index=self.name)
        except NotFoundError:
            pass  # nothing was ever written
