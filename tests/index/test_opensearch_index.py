"""OpenSearchIndex against a FAKE OpenSearch server, tested at the HTTP boundary.

No OpenSearch can run here, so ``FakeOpenSearch`` below is a small recording HTTP server (a fake,
not OpenSearch) speaking just enough of the OpenSearch REST API for this backend: HEAD/PUT index,
GET _mapping, GET/PUT _settings, POST _bulk (NDJSON), _search with scroll, DELETE scroll,
_delete_by_query, _count and _refresh. A real opensearch-py client talks to it over HTTP, so what
is asserted is the exact wire traffic the backend produces. Its k-NN scoring follows the
documented faiss ``innerproduct`` / ``cosinesimil`` score formulas; everything else it does
(relevance, refresh semantics, sharding) is deliberately naive.
"""

from __future__ import annotations

import gzip
import json
import math
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.http_boundary import fake_aws_credentials, loopback_server, no_proxies
from spotline.index.base import IndexModelMismatch
from spotline.errors import classify
from spotline.index.opensearch import BulkWriteError, OpenSearchIndex, build_client, score_to_similarity
from spotline.index.records import ChunkRecord
from spotline.settings import IndexSettings

INDEX = "spotline-test"
MODEL = "amazon.titan-embed-text-v2:0@4"
DIM = 4
FAKE_SECRET = "fakeSecretKeyDoNotUse/ABCDEFGHIJKLMNOPQRSTUV"
FAKE_KEY_ID = "AKIAFAKEFAKEFAKE0000"


# ---------------------------------------------------------------------------- the fake server


class FakeOpenSearch:
    """State + scripted faults for the fake server; ``requests`` records every call."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.indices: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        # (method, path) -> list of (status, body) replies served before normal handling
        self.scripted: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        # doc id -> list of (status, error type) replies for that bulk item, one per attempt
        self.item_faults: dict[str, list[tuple[int, str]]] = {}
        self.scrolls: dict[str, list[dict[str, Any]]] = {}
        self.page_size_cap: int | None = None

    # -- helpers for tests
    def calls(self, method: str, path_part: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and path_part in r["path"]]

    def add_index(self, name: str, meta: dict[str, Any] | None, space: str = "innerproduct") -> None:
        mappings: dict[str, Any] = {
            "dynamic": "strict",
            "properties": {"vector": {"type": "knn_vector", "dimension": DIM, "method": {"space_type": space}}},
        }
        if meta is not None:
            mappings["_meta"] = meta
        self.indices[name] = {"mappings": mappings, "settings": {"index": {}}, "docs": {}}

    # -- request handling
    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        key = (method, path)
        if self.scripted.get(key):
            return self.scripted[key].pop(0)
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if parts == ["_bulk"] or (len(parts) == 2 and parts[1] == "_bulk"):
            return self._bulk(body)
        if parts[:2] == ["_search", "scroll"]:
            return self._scroll(method, body)
        name = parts[0]
        idx = self.indices.get(name)
        missing = (404, {"error": {"type": "index_not_found_exception", "reason": f"no such index [{name}]"},
                         "status": 404})
        if len(parts) == 1:
            if method == "HEAD":
                return (200 if idx else 404), None
            if method == "PUT":
                if idx:
                    return 400, {"error": {"type": "resource_already_exists_exception", "reason": "exists"},
                                 "status": 400}
                self.indices[name] = {"mappings": body["mappings"], "settings": body["settings"], "docs": {}}
                return 200, {"acknowledged": True, "index": name}
        if idx is None:
            return missing
        op = parts[1]
        if op == "_mapping":
            return 200, {name: {"mappings": idx["mappings"]}}
        if op == "_settings" and method == "GET":
            wanted = parts[2] if len(parts) > 2 else None
            current = idx["settings"]["index"]
            if wanted == "index.refresh_interval":
                if "refresh_interval" not in current:
                    return 200, {}
                return 200, {name: {"settings": {"index": {"refresh_interval": current["refresh_interval"]}}}}
            return 200, {name: {"settings": {"index": current}}}
        if op == "_settings" and method == "PUT":
            for k, v in body["index"].items():
                if v is None:
                    idx["settings"]["index"].pop(k, None)
                else:
                    idx["settings"]["index"][k] = v
            return 200, {"acknowledged": True}
        if op == "_search":
            return self._search(idx, query, body)
        if op == "_count":
            return 200, {"count": len(idx["docs"])}
        if op == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_delete_by_query":
            matched = [i for i, d in idx["docs"].items() if _matches(body["query"], d)]
            for i in matched:
                del idx["docs"][i]
            return 200, {"deleted": len(matched), "failures": [], "version_conflicts": 0}
        return 400, {"error": {"type": "fake_unsupported", "reason": f"{method} {path}"}}

    def _bulk(self, lines: list[dict[str, Any]]) -> tuple[int, Any]:
        items, errors, i = [], False, 0
        while i < len(lines):
            (op, meta), = lines[i].items()
            i += 1
            doc = None
            if op != "delete":
                doc, i = lines[i], i + 1
            idx = self.indices[meta["_index"]]
            _id = meta["_id"]
            faults = self.item_faults.get(_id)
            if faults:
                status, etype = faults.pop(0)
                items.append({op: {"_index": meta["_index"], "_id": _id, "status": status,
                                   "error": {"type": etype, "reason": f"fake {etype} for [{_id}]"}}})
                errors = True
                continue
            if op == "delete":
                found = idx["docs"].pop(_id, None) is not None
                items.append({op: {"_index": meta["_index"], "_id": _id, "status": 200 if found else 404,
                                   "result": "deleted" if found else "not_found"}})
                errors = errors or not found
            else:
                created = _id not in idx["docs"]
                idx["docs"][_id] = doc
                items.append({op: {"_index": meta["_index"], "_id": _id, "status": 201 if created else 200,
                                   "result": "created" if created else "updated"}})
        return 200, {"took": 1, "errors": errors, "items": items}

    def _search(self, idx: dict[str, Any], query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        q = body.get("query", {"match_all": {}})
        if "knn" in q:
            (field, spec), = q["knn"].items()
            space = idx["mappings"]["properties"][field]["method"]["space_type"]
            scored = []
            for _id, doc in idx["docs"].items():
                ip = sum(a * b for a, b in zip(spec["vector"], doc[field]))
                if space == "innerproduct":  # faiss: d = -ip; score = 1/(1+d) if d >= 0 else 1 - d
                    d = -ip
                    score = 1 / (1 + d) if d >= 0 else 1 - d
                else:  # cosinesimil: d = 1 - cos; score = (2 - d) / 2
                    score = (2 - (1 - ip)) / 2
                scored.append((score, _id, doc))
            scored.sort(key=lambda t: -t[0])
            hits = [{"_index": "x", "_id": i, "_score": s, "_source": _source(doc, body.get("_source"))}
                    for s, i, doc in scored[: spec["k"]][: body.get("size", 10)]]
            return 200, {"hits": {"total": {"value": len(hits)}, "hits": hits}}
        hits = [{"_index": "x", "_id": i, "_score": None, "_source": _source(d, body.get("_source"))}
                for i, d in sorted(idx["docs"].items()) if _matches(q, d)]
        size = int(query.get("size", 10))
        if self.page_size_cap:
            size = min(size, self.page_size_cap)
        page, rest = hits[:size], hits[size:]
        reply: dict[str, Any] = {"_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                                 "hits": {"total": {"value": len(hits)}, "hits": page}}
        if "scroll" in query:
            sid = f"scroll-{len(self.scrolls)}"
            self.scrolls[sid] = rest
            reply["_scroll_id"] = sid
        return 200, reply

    def _scroll(self, method: str, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "DELETE":
            for sid in body["scroll_id"]:
                self.scrolls.pop(sid, None)
            return 200, {"succeeded": True, "num_freed": 1}
        sid = body["scroll_id"]
        rest = self.scrolls.get(sid, [])
        size = self.page_size_cap or 1000
        page, self.scrolls[sid] = rest[:size], rest[size:]
        return 200, {"_scroll_id": sid, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                     "hits": {"hits": page}}


def _source(doc: dict[str, Any], spec: Any) -> dict[str, Any]:
    if isinstance(spec, list):
        return {k: v for k, v in doc.items() if k in spec}
    if isinstance(spec, dict):
        return {k: v for k, v in doc.items() if k not in spec.get("excludes", [])}
    return dict(doc)


def _matches(q: dict[str, Any], doc: dict[str, Any]) -> bool:
    (kind, spec), = q.items()
    if kind == "match_all":
        return True
    (field, value), = spec.items()
    if kind == "prefix":
        return str(doc.get(field, "")).startswith(value)
    if kind == "terms":
        return doc.get(field) in value
    raise AssertionError(f"fake does not support query {q}")


def _make_handler(fake: FakeOpenSearch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding") == "gzip" and raw:
                raw = gzip.decompress(raw)
            text = raw.decode("utf-8")
            if not text:
                body: Any = None
            elif split.path.endswith("/_bulk"):
                body = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                body = json.loads(text)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            with fake.lock:
                fake.requests.append({"method": self.command, "path": split.path, "query": query,
                                      "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "raw": text})
                status, reply = fake.handle(self.command, split.path, query, body)
            payload = b"" if reply is None else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    return Handler


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    no_proxies(monkeypatch)
    state = FakeOpenSearch()
    with loopback_server(_make_handler(state)) as url:
        state.url = url  # type: ignore[attr-defined]
        yield state


def make_settings(fake: FakeOpenSearch, **overrides: Any) -> IndexSettings:
    values: dict[str, Any] = dict(
        name=INDEX, hosts=[fake.url], auth="none", timeout_s=5, max_retries=2,  # type: ignore[attr-defined]
        shards=2, replicas=1, hnsw_m=24, hnsw_ef_construction=256, hnsw_ef_search=120,
    )
    values.update(overrides)
    return IndexSettings(**values)


def make_index(fake: FakeOpenSearch, **overrides: Any) -> OpenSearchIndex:
    return OpenSearchIndex(make_settings(fake, **overrides), bulk_initial_backoff_s=0.01, bulk_max_backoff_s=0.05)


def unit(*xs: float) -> list[float]:
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


def record(uri: str, i: int, vector: list[float] | None = None, version: str = "v1") -> ChunkRecord:
    return ChunkRecord(
        chunk_id=ChunkRecord.make_id(uri, i, f"h{i}"),
        source_uri=uri, doc_version=version, doc_hash=f"dh-{uri}-{version}", chunk_hash=f"h{i}",
        chunk_index=i, title=f"Title {uri}", text=f"chunk {i} of {uri}", start_char=i * 10,
        end_char=i * 10 + 9, page_start=1, page_end=1, token_count=7, embedding_model=MODEL,
        vector=vector or unit(1.0, float(i), 0.5, 0.25),
    )


# ---------------------------------------------------------------------------- ensure


def test_ensure_creates_index_with_exact_body(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)

    assert [(r["method"], r["path"]) for r in fake.requests] == [("HEAD", f"/{INDEX}"), ("PUT", f"/{INDEX}")]
    assert fake.requests[1]["body"] == {
        "settings": {"index": {"knn": True, "knn.algo_param.ef_search": 120,
                               "number_of_shards": 2, "number_of_replicas": 1}},
        "mappings": {
            "_meta": {"spotline": {"embedding_model": MODEL, "dimension": DIM}},
            "dynamic": "strict",
            "properties": {
                "vector": {"type": "knn_vector", "dimension": DIM,
                           "method": {"name": "hnsw", "space_type": "innerproduct", "engine": "faiss",
                                      "parameters": {"m": 24, "ef_construction": 256}}},
                "chunk_id": {"type": "keyword"}, "source_uri": {"type": "keyword"},
                "doc_version": {"type": "keyword"}, "doc_hash": {"type": "keyword"},
                "chunk_hash": {"type": "keyword"}, "embedding_model": {"type": "keyword"},
                "title": {"type": "text"}, "text": {"type": "text"},
                "chunk_index": {"type": "integer"}, "start_char": {"type": "integer"},
                "end_char": {"type": "integer"}, "page_start": {"type": "integer"},
                "page_end": {"type": "integer"}, "token_count": {"type": "integer"},
            },
        },
    }
    # every ChunkRecord field is mapped (dynamic: strict would reject anything else)
    assert set(ChunkRecord.model_fields) == set(fake.requests[1]["body"]["mappings"]["properties"])
    # gzip compression is on
    assert fake.requests[1]["headers"].get("content-encoding") == "gzip"

    # second call: index exists, mapping matches, no second create
    fake.requests.clear()
    index.ensure(MODEL, DIM)
    assert [(r["method"], r["path"]) for r in fake.requests] == [("HEAD", f"/{INDEX}"), ("GET", f"/{INDEX}/_mapping")]


def test_ensure_serverless_omits_shards_and_replicas(fake: FakeOpenSearch) -> None:
    index = OpenSearchIndex(make_settings(fake, sigv4_service="aoss"), client=build_client(make_settings(fake)))
    index.ensure(MODEL, DIM)
    assert fake.calls("PUT", f"/{INDEX}")[0]["body"]["settings"] == {
        "index": {"knn": True, "knn.algo_param.ef_search": 120}
    }


@pytest.mark.parametrize("model,dim", [("other-model@4", DIM), (MODEL, 8)])
def test_ensure_raises_on_model_or_dimension_mismatch(fake: FakeOpenSearch, model: str, dim: int) -> None:
    fake.add_index(INDEX, {"spotline": {"embedding_model": MODEL, "dimension": DIM}})
    with pytest.raises(IndexModelMismatch) as err:
        make_index(fake).ensure(model, dim)
    assert err.value.have_model == MODEL and err.value.have_dim == DIM
    assert err.value.want_model == model and err.value.want_dim == dim
    assert not fake.calls("PUT", f"/{INDEX}")


def test_ensure_rejects_index_without_spotline_meta(fake: FakeOpenSearch) -> None:
    fake.add_index(INDEX, None)
    with pytest.raises(ValueError, match="not created by Spotline"):
        make_index(fake).ensure(MODEL, DIM)


def test_ensure_tolerates_concurrent_creation(fake: FakeOpenSearch) -> None:
    fake.add_index(INDEX, {"spotline": {"embedding_model": MODEL, "dimension": DIM}})
    fake.scripted[("HEAD", f"/{INDEX}")] = [(404, None)]  # another worker creates it after our check
    make_index(fake).ensure(MODEL, DIM)
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("HEAD", f"/{INDEX}"), ("PUT", f"/{INDEX}"), ("GET", f"/{INDEX}/_mapping")
    ]


# ---------------------------------------------------------------------------- upsert


def test_upsert_bulk_ndjson_lines_and_batching(fake: FakeOpenSearch) -> None:
    index = make_index(fake, bulk_max_docs=3)
    index.ensure(MODEL, DIM)
    records = [record("s3://b/a.pdf", i) for i in range(7)]
    index.upsert(records)

    bulks = fake.calls("POST", "/_bulk")
    assert [len(b["body"]) // 2 for b in bulks] == [3, 3, 1]
    lines = [line for b in bulks for line in b["body"]]
    for n, r in enumerate(records):
        assert lines[2 * n] == {"index": {"_index": INDEX, "_id": r.chunk_id}}
        assert lines[2 * n + 1] == r.model_dump()  # the document, no extra fields
    # ChunkRecord -> stored document round trip
    assert fake.indices[INDEX]["docs"][records[0].chunk_id] == records[0].model_dump()
    # small load: refresh settings untouched
    assert not fake.calls("PUT", "/_settings") and not fake.calls("GET", "/_settings")


def test_upsert_bulk_is_bounded_by_bytes(fake: FakeOpenSearch) -> None:
    one = len(json.dumps(record("s3://b/a.pdf", 0).model_dump()))
    index = make_index(fake, bulk_max_docs=500, bulk_max_bytes=int(one * 2.5))
    index.ensure(MODEL, DIM)
    index.upsert([record("s3://b/a.pdf", i) for i in range(5)])
    bulks = fake.calls("POST", "/_bulk")
    assert len(bulks) >= 3
    assert all(len(b["raw"].encode()) <= one * 2.5 for b in bulks)
    assert len(fake.indices[INDEX]["docs"]) == 5


def test_large_load_disables_then_restores_refresh_interval(fake: FakeOpenSearch) -> None:
    index = make_index(fake, large_load_chunks=4, bulk_max_docs=2)
    index.ensure(MODEL, DIM)
    fake.indices[INDEX]["settings"]["index"]["refresh_interval"] = "5s"
    fake.requests.clear()
    index.upsert([record("s3://b/a.pdf", i) for i in range(5)])

    seq = [(r["method"], r["path"], r["body"] if r["method"] == "PUT" else None) for r in fake.requests]
    assert seq[0][:2] == ("GET", f"/{INDEX}/_settings/index.refresh_interval")
    assert seq[1] == ("PUT", f"/{INDEX}/_settings", {"index": {"refresh_interval": "-1"}})
    assert [s[1] for s in seq[2:-1]] == ["/_bulk"] * 3
    assert seq[-1] == ("PUT", f"/{INDEX}/_settings", {"index": {"refresh_interval": "5s"}})
    assert fake.indices[INDEX]["settings"]["index"]["refresh_interval"] == "5s"


def test_large_load_restores_default_refresh_even_on_failure(fake: FakeOpenSearch) -> None:
    index = make_index(fake, large_load_chunks=1)
    index.ensure(MODEL, DIM)
    fake.requests.clear()
    fake.scripted[("POST", "/_bulk")] = [(400, {"error": {"type": "parse_exception", "reason": "bad"}, "status": 400})]
    with pytest.raises(Exception):
        index.upsert([record("s3://b/a.pdf", i) for i in range(3)])
    puts = [r["body"] for r in fake.calls("PUT", "/_settings")]
    # never set before -> restored to null, i.e. the cluster default
    assert puts == [{"index": {"refresh_interval": "-1"}}, {"index": {"refresh_interval": None}}]
    assert "refresh_interval" not in fake.indices[INDEX]["settings"]["index"]


def test_whole_bulk_request_429_is_retried(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    too_many = (429, {"error": {"type": "rejected_execution_exception", "reason": "queue full"}, "status": 429})
    # transport retries (max_retries=2) are spent on the first three; streaming_bulk backs off and retries
    fake.scripted[("POST", "/_bulk")] = [too_many] * 4
    records = [record("s3://b/a.pdf", i) for i in range(3)]
    index.upsert(records)
    assert len(fake.calls("POST", "/_bulk")) == 5
    assert set(fake.indices[INDEX]["docs"]) == {r.chunk_id for r in records}


def test_item_429_is_retried_per_item(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    records = [record("s3://b/a.pdf", i) for i in range(3)]
    fake.item_faults[records[1].chunk_id] = [(429, "es_rejected_execution_exception")] * 2
    index.upsert(records)
    bulks = fake.calls("POST", "/_bulk")
    assert [len(b["body"]) // 2 for b in bulks] == [3, 1, 1]
    assert bulks[1]["body"][0] == {"index": {"_index": INDEX, "_id": records[1].chunk_id}}
    assert set(fake.indices[INDEX]["docs"]) == {r.chunk_id for r in records}


def test_partial_bulk_failure_raises_after_writing_the_rest(fake: FakeOpenSearch) -> None:
    index = make_index(fake, bulk_max_docs=2)
    index.ensure(MODEL, DIM)
    records = [record("s3://b/a.pdf", i) for i in range(5)]
    bad = records[1].chunk_id
    fake.item_faults[bad] = [(400, "mapper_parsing_exception")]
    with pytest.raises(BulkWriteError) as err:
        index.upsert(records)
    message = str(err.value)
    assert "1 of 5 bulk index operations failed" in message
    assert bad in message and "mapper_parsing_exception" in message
    assert err.value.failed_ids == [bad]
    assert classify(err.value) == "permanent"  # a mapping error: the document is set aside, no retry
    # the whole batch was attempted; the other items were written
    assert len(fake.calls("POST", "/_bulk")) == 3
    assert set(fake.indices[INDEX]["docs"]) == {r.chunk_id for r in records} - {bad}


def test_upsert_rejects_unnormalised_vectors(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    with pytest.raises(ValueError, match="not L2-normalised"):
        index.upsert([record("s3://b/a.pdf", 0, vector=[1.0, 1.0, 0.0, 0.0])])
    with pytest.raises(ValueError, match="dimension"):
        index.upsert([record("s3://b/a.pdf", 0, vector=unit(1.0, 1.0, 1.0))])
    assert not fake.calls("POST", "/_bulk")


# ---------------------------------------------------------------------------- reads


def test_search_knn_body_and_score_conversion(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    near = record("s3://b/a.pdf", 0, vector=unit(1.0, 0.1, 0.0, 0.0))
    ortho = record("s3://b/b.pdf", 1, vector=unit(0.0, 0.0, 1.0, 0.0))
    opposite = record("s3://b/c.pdf", 2, vector=unit(-1.0, -0.2, 0.0, 0.3))
    index.upsert([near, ortho, opposite])
    fake.requests.clear()

    query = [2.0, 0.0, 0.0, 0.0]  # not normalised: the backend sends the unit vector
    hits = index.search(query, k=3)

    (req,) = fake.requests
    assert (req["method"], req["path"]) == ("POST", f"/{INDEX}/_search")
    assert req["body"] == {"size": 3, "_source": {"excludes": ["vector"]},
                           "query": {"knn": {"vector": {"vector": [1.0, 0.0, 0.0, 0.0], "k": 3}}}}
    assert [h.chunk_id for h in hits] == [near.chunk_id, ortho.chunk_id, opposite.chunk_id]
    for hit, rec in zip(hits, [near, ortho, opposite]):
        assert hit.score == pytest.approx(rec.vector[0], abs=1e-9)  # cosine with e1
        assert (hit.source_uri, hit.title, hit.text) == (rec.source_uri, rec.title, rec.text)
        assert (hit.chunk_index, hit.page_start, hit.start_char, hit.end_char) == (
            rec.chunk_index, rec.page_start, rec.start_char, rec.end_char)
    assert hits[2].score < 0  # the ip < 0 branch: score = 1 / (1 - ip)


def test_search_decodes_cosinesimil_index_read_from_mapping(fake: FakeOpenSearch) -> None:
    fake.add_index(INDEX, {"spotline": {"embedding_model": MODEL, "dimension": DIM}}, space="cosinesimil")
    fake.indices[INDEX]["docs"]["x"] = record("s3://b/a.pdf", 0, vector=unit(1.0, 1.0, 0.0, 0.0)).model_dump()
    hits = make_index(fake).search([1.0, 0.0, 0.0, 0.0], k=1)  # no ensure(): mapping read lazily
    assert hits[0].score == pytest.approx(math.sqrt(0.5), abs=1e-9)
    assert fake.calls("GET", "/_mapping")


def test_score_formulas() -> None:
    for cos in (-0.9, -0.2, 0.0, 0.3, 1.0):
        ip_score = 1 / (1 - cos) if cos < 0 else cos + 1
        assert score_to_similarity(ip_score, "innerproduct") == pytest.approx(cos)
        assert score_to_similarity((1 + cos) / 2, "cosinesimil") == pytest.approx(cos)
        assert score_to_similarity(1 / (1 + 2 - 2 * cos), "l2") == pytest.approx(cos)


def test_document_states_scans_with_prefix_query(fake: FakeOpenSearch) -> None:
    fake.page_size_cap = 2  # force several scroll pages
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    a = [record("s3://b/docs/a.pdf", i) for i in range(3)]
    a_new = record("s3://b/docs/a.pdf", 3, version="v2")  # interrupted replacement
    b = [record("s3://b/docs/b.pdf", 0)]
    other = [record("s3://b/other/c.pdf", 0)]
    index.upsert(a + [a_new] + b + other)
    fake.requests.clear()

    states = index.document_states("s3://b/docs/")

    first = fake.requests[0]
    assert (first["method"], first["path"]) == ("POST", f"/{INDEX}/_search")
    assert first["query"]["scroll"] == "5m"
    assert first["body"]["query"] == {"prefix": {"source_uri": "s3://b/docs/"}}
    assert first["body"]["_source"] == ["source_uri", "doc_version", "doc_hash", "chunk_id"]
    assert fake.calls("POST", "/_search/scroll") and fake.calls("DELETE", "/_search/scroll")
    assert set(states) == {"s3://b/docs/a.pdf", "s3://b/docs/b.pdf"}
    sa = states["s3://b/docs/a.pdf"]
    assert sa.doc_versions == {"v1", "v2"} and len(sa.doc_hashes) == 2 and not sa.is_current("v2")
    assert sa.chunk_ids == {r.chunk_id for r in a + [a_new]}
    assert states["s3://b/docs/b.pdf"].is_current("v1")

    fake.requests.clear()
    assert set(index.document_states()) == {"s3://b/docs/a.pdf", "s3://b/docs/b.pdf", "s3://b/other/c.pdf"}
    assert fake.requests[0]["body"]["query"] == {"match_all": {}}


def test_document_states_of_missing_index_is_empty(fake: FakeOpenSearch) -> None:
    assert make_index(fake).document_states() == {}
    assert make_index(fake).count() == 0


# ---------------------------------------------------------------------------- deletes, count, refresh


def test_delete_documents_body(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    index.upsert([record("s3://b/a.pdf", 0), record("s3://b/b.pdf", 0), record("s3://b/c.pdf", 0)])
    fake.requests.clear()
    index.delete_documents(["s3://b/b.pdf", "s3://b/a.pdf"])
    (req,) = fake.requests
    assert (req["method"], req["path"]) == ("POST", f"/{INDEX}/_delete_by_query")
    assert req["query"] == {"conflicts": "proceed", "refresh": "true"}
    assert req["body"] == {"query": {"terms": {"source_uri": ["s3://b/a.pdf", "s3://b/b.pdf"]}}}
    assert [d["source_uri"] for d in fake.indices[INDEX]["docs"].values()] == ["s3://b/c.pdf"]


def test_delete_documents_batches_terms(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    fake.requests.clear()
    index.delete_documents([f"s3://b/{i:04d}.pdf" for i in range(1201)])
    sizes = [len(r["body"]["query"]["terms"]["source_uri"]) for r in fake.calls("POST", "/_delete_by_query")]
    assert sizes == [500, 500, 201]


def test_delete_chunks_tolerates_missing_ids(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    records = [record("s3://b/a.pdf", i) for i in range(3)]
    index.upsert(records)
    fake.requests.clear()
    assert index.delete_chunks([records[0].chunk_id, "gone-already"]) == 2
    (req,) = fake.requests
    assert req["body"] == [{"delete": {"_index": INDEX, "_id": records[0].chunk_id}},
                           {"delete": {"_index": INDEX, "_id": "gone-already"}}]
    assert set(fake.indices[INDEX]["docs"]) == {r.chunk_id for r in records[1:]}
    assert index.delete_chunks([]) == 0


def test_count_and_finalize(fake: FakeOpenSearch) -> None:
    index = make_index(fake)
    index.ensure(MODEL, DIM)
    index.upsert([record("s3://b/a.pdf", i) for i in range(4)])
    fake.requests.clear()
    assert index.count() == 4
    index.finalize()
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("POST", f"/{INDEX}/_count"),
        ("GET", f"/{INDEX}/_settings/index.refresh_interval"),
        ("POST", f"/{INDEX}/_refresh"),
    ]


def test_refresh_left_disabled_is_repaired(fake: FakeOpenSearch) -> None:
    index = make_index(fake, large_load_chunks=1)
    index.ensure(MODEL, DIM)
    fake.indices[INDEX]["settings"]["index"]["refresh_interval"] = "-1"  # a loader died mid-load
    fake.requests.clear()
    index.upsert([record("s3://b/a.pdf", i) for i in range(2)])
    # "-1" is never restored as if it were the user's value
    assert [r["body"] for r in fake.calls("PUT", "/_settings")] == [
        {"index": {"refresh_interval": "-1"}}, {"index": {"refresh_interval": None}}
    ]
    fake.indices[INDEX]["settings"]["index"]["refresh_interval"] = "-1"
    fake.requests.clear()
    index.finalize()
    assert [(r["method"], r["body"]) for r in fake.calls("PUT", "/_settings")] == [
        ("PUT", {"index": {"refresh_interval": None}})
    ]
    assert "refresh_interval" not in fake.indices[INDEX]["settings"]["index"]
    assert fake.calls("POST", "/_refresh")


# ---------------------------------------------------------------------------- auth


def test_sigv4_aoss_signs_requests_and_never_leaks_the_secret(fake: FakeOpenSearch, monkeypatch) -> None:
    fake_aws_credentials(monkeypatch, FAKE_KEY_ID, FAKE_SECRET)

    index = OpenSearchIndex(make_settings(fake, auth="sigv4", sigv4_service="aoss", region="us-east-1"))
    index.ensure(MODEL, DIM)
    index.upsert([record("s3://b/a.pdf", 0)])
    index.finalize()  # no _refresh on Serverless

    assert not fake.calls("POST", "/_refresh")
    assert fake.requests
    for req in fake.requests:
        headers = req["headers"]
        auth = headers["authorization"]
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={FAKE_KEY_ID}/")
        assert "/us-east-1/aoss/aws4_request" in auth
        assert "x-amz-content-sha256" in auth.split("SignedHeaders=")[1].split(",")[0]
        assert len(headers["x-amz-content-sha256"]) == 64
        assert FAKE_SECRET not in json.dumps(req["headers"])
        assert FAKE_SECRET not in req["raw"]

    # a failing call: the error text carries no credentials either
    fake.scripted[("POST", f"/{INDEX}/_search")] = [
        (403, {"message": "The request signature we calculated does not match"})
    ]
    with pytest.raises(Exception) as err:
        index.search(unit(1, 0, 0, 0))
    assert FAKE_SECRET not in str(err.value) and FAKE_SECRET not in repr(err.value)
    assert FAKE_SECRET not in repr(index.client)


def test_basic_auth_header_and_no_password_in_errors(fake: FakeOpenSearch) -> None:
    index = OpenSearchIndex(make_settings(fake, auth="basic", username="spot", password="hunter2-secret"))
    fake.scripted[("HEAD", f"/{INDEX}")] = [(401, None)]
    with pytest.raises(Exception) as err:
        index.ensure(MODEL, DIM)
    assert "hunter2-secret" not in str(err.value) and "hunter2-secret" not in repr(err.value)
    assert fake.requests[0]["headers"]["authorization"].startswith("Basic ")


def test_sigv4_without_credentials_is_a_clear_error(fake: FakeOpenSearch, monkeypatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    with pytest.raises(ValueError, match="no AWS credentials"):
        build_client(make_settings(fake, auth="sigv4"))


def test_item_429_that_never_clears_is_reported(fake: FakeOpenSearch) -> None:
    index = make_index(fake)  # max_retries=2 -> three attempts per item
    index.ensure(MODEL, DIM)
    records = [record("s3://b/a.pdf", i) for i in range(2)]
    fake.item_faults[records[0].chunk_id] = [(429, "es_rejected_execution_exception")] * 10
    with pytest.raises(BulkWriteError, match="429 es_rejected_execution_exception") as err:
        index.upsert(records)
    assert err.value.failed_ids == [records[0].chunk_id]
    assert classify(err.value) == "transient"  # still throttled after the client's retries: the task retries
    assert len(fake.calls("POST", "/_bulk")) == 3
    assert set(fake.indices[INDEX]["docs"]) == {records[1].chunk_id}
