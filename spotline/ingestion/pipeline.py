"""Incremental, idempotent document ingestion — the logic, without Prefect.

The index is the source of truth for what is already ingested: each chunk carries its document's
version (ETag / size+mtime) and content hash. Planning compares a listing with that, so an
unchanged corpus needs no reads and no embeddings. Replacing a document writes its new chunks
first and deletes the stale ones after, so a crash at any point leaves the document searchable,
and the next run (which sees two content hashes for it) finishes the job.
"""

from __future__ import annotations

import json
import logging
import time
from collections import ChainMap
from datetime import datetime, timezone
from typing import Iterable, Iterator, Literal, Mapping

import numpy as np
from pydantic import BaseModel, Field

from spotline.ingestion.chunking import Chunk
from spotline.embedding.base import EmbeddingError, EmbeddingUsage
from spotline import interrupts
from spotline.errors import brief, classify, is_transient
from spotline.index.records import ChunkRecord, DocumentState
from spotline.storage.base import ObjectInfo
from spotline.hashing import sha256_hex
from spotline.ingestion.parsing import Block, ParsedDocument, SetAside, parse_document
from spotline.resources import Resources
from spotline.storage import ObjectNotFound, UnsafeObject

log = logging.getLogger(__name__)

CACHE_SAVE_S = 60.0  # a streamed document's embeddings reach the cache at least this often

Status = Literal["new", "changed", "unchanged", "failed", "deleted"]


class DocOutcome(BaseModel):
    source_uri: str
    key: str
    status: Status
    chunks: int = 0
    chunks_embedded: int = 0
    tokens_embedded: int = 0
    reason: str | None = None
    detail: str | None = None
    encoding: str | None = None  # the text encoding used, when not UTF-8 this was detected


class Usage(BaseModel):
    texts: int = 0
    requests: int = 0
    input_tokens: int = 0
    throttled: int = 0

    def add(self, u: EmbeddingUsage | "Usage") -> None:
        self.texts += u.texts
        self.requests += u.requests
        self.input_tokens += u.input_tokens
        self.throttled += u.throttled


class BatchReport(BaseModel):
    outcomes: list[DocOutcome] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    chunks_written: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0


class SyncPlan(BaseModel):
    """What a run will do. Documents to process carry the index state they replace."""

    to_process: list[ObjectInfo]
    states: dict[str, DocumentState]
    unchanged: list[ObjectInfo]
    to_delete: list[str]
    quarantined: set[str] = Field(default_factory=set)
    duplicates_removed: int = 0  # surplus rows of chunk ids stored twice, removed before planning
    repaired: list[str] = Field(default_factory=list)  # their documents, re-indexed by this run

    def batches(self, size: int, large_bytes: int | None = None) -> list[list[ObjectInfo]]:
        """Batches of `size` small documents, then every large one (by listing size) on its own, last.

        A large document is its own work unit: it cannot hold back the small ones beside it from
        being cached and indexed, and a retry or resume repeats only it.
        """
        small = [d for d in self.to_process if large_bytes is None or d.size < large_bytes]
        large = [d for d in self.to_process if large_bytes is not None and d.size >= large_bytes]
        return [small[i : i + size] for i in range(0, len(small), size)] + [[d] for d in large]


# ---------------------------------------------------------------- sources and planning


def list_sources(res: Resources, prefix: str | None = None, key: str | None = None,
                 keys: list[str] | None = None) -> list[ObjectInfo]:
    """The documents a run considers: everything under a prefix, or named keys (event-triggered)
    as they are now; a key that no longer exists is simply absent."""
    system = res.settings.store.system_prefix
    named = [key] if key is not None else keys
    if named is not None:
        found = []
        for k in named:
            if k.startswith(system):
                raise ValueError(f"key {k!r} is inside Spotline's system prefix {system!r}")
            info = res.store.head(k)
            if info is not None:
                found.append(info)
        return found
    prefix = res.settings.ingest.source_prefix if prefix is None else prefix
    return [o for o in res.store.list(prefix) if not o.key.startswith(system) and not o.key.endswith("/")]


def quarantine_prefix(res: Resources) -> str:
    return res.settings.layout.quarantine(res.index.name)


def quarantine_key(res: Resources, source_uri: str) -> str:
    return f"{quarantine_prefix(res)}{sha256_hex(source_uri)[:24]}.json"


def plan_sync(
    res: Resources,
    sources: list[ObjectInfo],
    uri_prefix: str | None,
    full_sync: bool,
    force: bool = False,
    removed_uris: Iterable[str] = (),
) -> SyncPlan:
    spec = res.embedder_spec
    res.index.ensure(spec.model_id, spec.dimension)  # refuses a mixed-model index before any work
    # Repair path: a chunk id stored twice (an unserialised race, or an index from before writers
    # were serialised) would otherwise be returned twice by every query and never noticed, since
    # its document looks current. Its documents are removed whole and re-indexed below (cached
    # embeddings make that cheap), which is crash-safe where patching rows in place is not.
    listed = {i.uri for i in sources}
    surplus_by_doc = {u: n for u, n in res.index.duplicated_documents().items() if u in listed}  # re-indexed below
    surplus, repaired = sum(surplus_by_doc.values()), sorted(surplus_by_doc)
    if repaired:
        log.warning("index %s stores %d duplicate chunk row(s) in %d document(s); re-indexing them",
                    res.index.name, surplus, len(repaired))
        res.index.delete_documents(repaired)
    states = res.index.document_states(uri_prefix)
    to_process, unchanged = [], []
    for info in sources:
        state = states.get(info.uri)
        if state and state.is_current(info.version) and not force:
            unchanged.append(info)
        else:
            to_process.append(info)
    seen = {i.uri for i in sources}
    to_delete = sorted({u for u in states if u not in seen} if full_sync else set())
    to_delete = sorted(set(to_delete) | set(removed_uris))  # also clears a never-indexed file's record
    relevant = {i.uri for i in to_process} | set(to_delete)
    # Record keys derive from the URI, so one listing tells which documents have one.
    records = {o.key for o in res.store.list(quarantine_prefix(res))}
    records -= _drop_stale_records(res, records, sources, unchanged, uri_prefix if full_sync else None)
    return SyncPlan(
        to_process=to_process,
        states={u: s for u, s in states.items() if u in relevant},
        unchanged=unchanged,
        to_delete=to_delete,
        quarantined={u for u in relevant if quarantine_key(res, u) in records},
        duplicates_removed=surplus,
        repaired=repaired,
    )


def _drop_stale_records(
    res: Resources, records: set[str], sources: list[ObjectInfo], unchanged: list[ObjectInfo], sync_prefix: str | None
) -> set[str]:
    """Delete quarantine records that no longer describe a problem; return their keys.

    A record is stale when its document is now current in the index (fixed, restored, or
    finished after a crash), or, in a full sync, when it names a document under the prefix that
    is gone from the source. Only records matching no listed source are read (to learn their URI).
    """
    listed = {quarantine_key(res, i.uri) for i in sources}
    stale = records & {quarantine_key(res, i.uri) for i in unchanged}
    if sync_prefix is not None:
        for key in records - listed:
            try:
                uri = json.loads(res.store.get(key)).get("source_uri", "")
            except (ObjectNotFound, ValueError):
                continue
            if uri.startswith(sync_prefix):
                stale.add(key)
    for key in stale:
        res.store.delete(key)
    return stale


# ---------------------------------------------------------------- one batch


class _Doc:
    def __init__(self, info: ObjectInfo, state: DocumentState | None):
        self.info, self.state = info, state
        self.doc_hash = ""
        self.chunks: list[Chunk] = []
        self.vectors: dict[str, np.ndarray] = {}
        self.embedded: set[str] = set()
        self.cached_hashes: set[str] = set()  # chunk hashes this run paid to embed for this document
        self.encoding: str | None = None
        self.outcome: DocOutcome | None = None


def _set_aside(res: Resources, doc: _Doc, reason: str, detail: str, run_id: str | None) -> None:
    record = {
        "source_uri": doc.info.uri,
        "key": doc.info.key,
        "version": doc.info.version,
        "reason": reason,
        "detail": detail,
        "kept_previous_version": bool(doc.state and doc.state.chunk_ids),
        "flow_run_id": run_id,
        "at": datetime.now(timezone.utc).isoformat(),
    }
    res.store.put(quarantine_key(res, doc.info.uri), json.dumps(record, indent=2).encode(), "application/json")
    doc.outcome = DocOutcome(source_uri=doc.info.uri, key=doc.info.key, status="failed", reason=reason, detail=detail)
    # Info, not warning: the flow reports each set-aside file once, as a warning on its run's log
    # (this logger is not Prefect's, and Python would print a warning here to stderr a second time).
    log.info("set aside %s: %s (%s)", doc.info.key, reason, detail)


def _embed_missing(
    res: Resources, docs: list[_Doc], usage: Usage, run_id: str | None, cached: Mapping[str, Mapping] | None = None
) -> None:
    """Fill doc.vectors for every chunk, embedding only hashes no cache shard holds (`cached`:
    vectors already known per document URI, instead of loading its shard)."""
    missing: dict[str, str] = {}  # chunk hash -> text; identical chunks are embedded once
    for doc in docs:
        known = cached[doc.info.uri] if cached is not None else res.embedding_cache.load(doc.info.uri)
        if cached is None:
            doc.cached_hashes = set(known)
        for c in doc.chunks:
            h = c.chunk_hash
            if h in known:
                doc.vectors[h] = known[h]
            else:
                missing.setdefault(h, c.embed_text)
    if not missing:
        return
    hashes = list(missing)
    counts = {c.chunk_hash: c.token_count + 2 for d in docs for c in d.chunks}  # + [CLS] [SEP]

    def account(u: EmbeddingUsage, texts_hashes: list[str]) -> None:
        if not u.input_tokens:  # the local model does not report tokens: use the chunker's exact counts
            u.input_tokens = sum(counts[h] for h in texts_hashes)
        usage.add(u)

    try:
        batch = res.embedder.embed([missing[h] for h in hashes])
        fresh = dict(zip(hashes, batch.vectors))
        account(batch.usage, hashes)
    except EmbeddingError:
        # Isolate the document the service rejects instead of losing the whole batch.
        fresh = {}
        for doc in docs:
            todo = [c for c in doc.chunks if c.chunk_hash not in doc.vectors and c.chunk_hash not in fresh]
            try:
                b = res.embedder.embed([c.embed_text for c in todo])
            except EmbeddingError as exc:
                _set_aside(res, doc, "embedding-error", brief(exc), run_id)
                continue
            account(b.usage, [c.chunk_hash for c in todo])
            fresh.update({c.chunk_hash: v for c, v in zip(todo, b.vectors)})
    claimed: set[str] = set()
    for doc in docs:
        if doc.outcome is not None:
            continue
        for c in doc.chunks:
            h = c.chunk_hash
            if h not in doc.vectors:
                doc.vectors[h] = fresh[h]
                if h not in claimed:  # a text shared by two documents is counted once
                    claimed.add(h)
                    doc.embedded.add(h)


def _permanently_rejected(exc: Exception) -> set[str]:
    """Chunk ids an index refused for good (e.g. a mapping error), or empty when the failure is
    transient or not per item. The index says which by the error's base class."""
    failures = getattr(exc, "failures", None)
    if not failures or classify(exc) != "permanent":
        return set()
    return {f["id"] for f in failures}


def _read_and_parse(res: Resources, doc: _Doc, run_id: str | None) -> ParsedDocument | None:
    """The document's parsed text, or None when it was set aside. ObjectNotFound passes through."""
    limit = res.settings.chunking.max_document_bytes
    if doc.info.set_aside_reason:  # the listing refused it (a symlink out of the store, a FIFO)
        _set_aside(res, doc, doc.info.set_aside_reason, doc.info.set_aside_detail or "", run_id)
        return None
    if doc.info.size > limit:  # decided from the listing: never download it
        _set_aside(res, doc, "too-large", f"{doc.info.size} bytes exceeds the {limit}-byte limit", run_id)
        return None
    try:
        data = res.store.get(doc.info.key)
    except ObjectNotFound:
        raise
    except UnsafeObject as exc:
        _set_aside(res, doc, exc.reason, exc.detail, run_id)
        return None
    except Exception as exc:
        if is_transient(exc):
            raise  # the task retries the batch
        _set_aside(res, doc, "unreadable", f"{type(exc).__name__}: {brief(exc)}", run_id)
        return None
    doc.doc_hash = sha256_hex(data)
    try:
        parsed = parse_document(doc.info.key, data, limit)
        del data
        doc.encoding = parsed.encoding
        _check_tokens(res, parsed)
        return parsed
    except SetAside as exc:
        _set_aside(res, doc, exc.reason, exc.detail, run_id)
    except Exception as exc:
        # A parser bug or a pathological file (RecursionError, zlib.error, ...) must not block
        # every later document, run after run; only a transient failure retries the batch.
        if is_transient(exc):
            raise
        _set_aside(res, doc, "corrupt", f"could not parse ({type(exc).__name__}: {brief(exc)})", run_id)
    return None


def _check_tokens(res: Resources, parsed: ParsedDocument) -> None:
    """Bound a document's cost by tokens, not only bytes: raise SetAside('too-large') past the limit.

    A WordPiece token covers at least one character, so a text no longer than the limit in
    characters cannot exceed it and is not counted at all. Longer texts are counted slice by
    slice and counting stops at the limit: the check costs at most `limit` tokens of work.
    """
    limit = res.settings.chunking.max_document_tokens
    text = parsed.text
    if len(text) <= limit:
        return
    counted, pos, step = 0, 0, 100_000
    while pos < len(text):
        end = min(pos + step, len(text))
        if end < len(text):  # cut at whitespace so no word is split between two slices
            space = text.rfind(" ", pos, end)
            end = space + 1 if space > pos else end
        counted += res.chunker.count([text[pos:end]])[0]
        pos = end
        if counted > limit:
            raise SetAside(
                "too-large",
                f"more than {limit:,} tokens (chunking.max_document_tokens): {counted:,} tokens in the first "
                f"{pos:,} of {len(text):,} characters",
            )


def _split_block(text: str, block: Block, max_chars: int) -> list[Block]:
    """A block longer than max_chars (a log or export without blank lines) cut at line breaks,
    else at spaces, else hard: otherwise one paragraph would be one slice however long it is."""
    pieces, start = [], block.start
    while block.end - start > max_chars:
        limit = start + max_chars
        cut = text.rfind("\n", start + 1, limit)
        cut = cut if cut > start else text.rfind(" ", start + 1, limit)
        cut = cut if cut > start else limit
        pieces.append(Block(start, cut, block.heading and not pieces, block.page))
        start = cut
        while start < block.end and text[start].isspace():
            start += 1
    if start < block.end:
        pieces.append(Block(start, block.end, block.heading and not pieces, block.page))
    return pieces


def _slices(parsed: ParsedDocument, max_chars: int) -> Iterator[ParsedDocument]:
    """The document as consecutive runs of whole blocks of about max_chars each (views: no text copied)."""
    blocks = [piece for b in parsed.blocks
              for piece in (_split_block(parsed.text, b, max_chars) if b.end - b.start > max_chars else [b])]
    i = 0
    while i < len(blocks):
        j, start = i, blocks[i].start
        while j < len(blocks) and (j == i or blocks[j].end - start <= max_chars):
            j += 1
        yield ParsedDocument(text=parsed.text, title=parsed.title, format=parsed.format, blocks=blocks[i:j],
                             pages=parsed.pages, encoding=parsed.encoding)
        i = j


def _chunk(res: Resources, doc: _Doc, parsed: ParsedDocument, run_id: str | None) -> None:
    """Fill doc.chunks, or set the document aside when the chunker fails on it (never the batch)."""
    try:
        doc.chunks = res.chunker.split(parsed)
    except Exception as exc:
        if is_transient(exc):
            raise
        _set_aside(res, doc, "corrupt", f"could not chunk ({type(exc).__name__}: {brief(exc)})", run_id)


def _records(res: Resources, doc: _Doc, chunks: list[Chunk]) -> list[ChunkRecord]:
    model_id = res.embedder_spec.model_id
    return [
        ChunkRecord(
            chunk_id=ChunkRecord.make_id(doc.info.uri, c.index, c.chunk_hash),
            source_uri=doc.info.uri,
            doc_version=doc.info.version,
            doc_hash=doc.doc_hash,
            chunk_hash=c.chunk_hash,
            chunk_index=c.index,
            title=c.title,
            text=c.text,
            start_char=c.start_char,
            end_char=c.end_char,
            page_start=c.page_start,
            page_end=c.page_end,
            token_count=c.token_count,
            embedding_model=model_id,
            vector=doc.vectors[c.chunk_hash].tolist(),
        )
        for c in chunks
    ]


def _finish(doc: _Doc, chunks: int, tokens_embedded: int) -> None:
    if doc.state is None or not doc.state.doc_hashes:
        status: Status = "new"
    elif doc.state.doc_hashes == {doc.doc_hash}:
        status = "unchanged"  # touched (new ETag/mtime) or a repaired replacement: same bytes
    else:
        status = "changed"
    doc.outcome = DocOutcome(
        source_uri=doc.info.uri,
        key=doc.info.key,
        status=status,
        chunks=chunks,
        chunks_embedded=len(doc.embedded),
        tokens_embedded=tokens_embedded,
        encoding=doc.encoding,
    )


def ingest_batch(
    res: Resources, infos: list[ObjectInfo], states: dict[str, DocumentState], run_id: str | None = None,
    quarantined: set[str] | None = None,
) -> BatchReport:
    """Parse, chunk, embed what is new, upsert, then delete stale chunks, for a batch of documents.

    Documents whose text is longer than `ingest.slice_chars` are held back and streamed after the
    rest of the batch is written, one at a time: the small ones are cached and indexed first.
    """
    interrupts.raise_if_stopping("a new batch")
    t0 = time.perf_counter()
    report = BatchReport()
    spec = res.embedder_spec
    res.index.ensure(spec.model_id, spec.dimension)
    docs = [_Doc(i, states.get(i.uri)) for i in infos]
    vanished: list[_Doc] = []
    large: list[tuple[_Doc, ParsedDocument]] = []
    slice_chars = res.settings.ingest.slice_chars

    for doc in docs:
        try:
            parsed = _read_and_parse(res, doc, run_id)
        except ObjectNotFound:  # removed between listing and reading
            vanished.append(doc)
            continue
        if parsed is None:
            continue
        if len(parsed.text) > slice_chars:
            large.append((doc, parsed))
            continue
        _chunk(res, doc, parsed, run_id)

    held = {id(d) for d, _ in large}
    live = [d for d in docs if d.outcome is None and d not in vanished and id(d) not in held]
    _embed_missing(res, live, report.usage, run_id)
    live = [d for d in live if d.outcome is None]

    records: list[ChunkRecord] = []
    for doc in live:
        records.extend(_records(res, doc, doc.chunks))
        # Cache before the index write: a run killed after embedding never pays for it again.
        if doc.embedded or doc.cached_hashes != set(doc.vectors):
            res.embedding_cache.save(doc.info.uri, doc.vectors)

    new_ids: dict[str, set[str]] = {}
    records, live = _upsert(res, records, live, new_ids, run_id)
    report.chunks_written = len(records)

    stale: list[str] = []
    for doc in live:  # 2. only then, stale chunks out
        if doc.state:
            stale.extend(doc.state.chunk_ids - new_ids.get(doc.info.uri, set()))
    report.chunks_deleted = res.index.delete_chunks(stale)
    if vanished:
        res.index.delete_documents([d.info.uri for d in vanished])

    quarantined = quarantined or set()
    for doc in live:
        if doc.info.uri in quarantined:
            res.store.delete(quarantine_key(res, doc.info.uri))
        _finish(doc, len(doc.chunks), sum(c.token_count for c in doc.chunks if c.chunk_hash in doc.embedded))
    for doc in vanished:
        doc.outcome = DocOutcome(source_uri=doc.info.uri, key=doc.info.key, status="deleted")

    while large:  # popped, so each document's text is freed once it is written
        doc, parsed = large.pop(0)
        _ingest_streamed(res, doc, parsed, report, run_id, doc.info.uri in quarantined)
        del parsed
    report.outcomes = [d.outcome for d in docs]
    report.seconds = time.perf_counter() - t0
    return report


def _upsert(
    res: Resources, records: list[ChunkRecord], live: list[_Doc], new_ids: dict[str, set[str]], run_id: str | None
) -> tuple[list[ChunkRecord], list[_Doc]]:
    """Write new chunks (deterministic ids: a retry overwrites). A document the index refuses for
    good is set aside with its previous version kept whole; throttling and 5xx re-raise."""
    try:
        res.index.upsert(records)
    except Exception as exc:
        rejected = _permanently_rejected(exc)
        if not rejected:
            raise  # throttling, 5xx, network: the task retries the whole (idempotent) batch
        bad = {r.source_uri for r in records if r.chunk_id in rejected}
        partial: list[str] = []
        for doc in live:
            if doc.info.uri in bad:  # keep its previous version whole: remove the new chunks that did land
                _set_aside(res, doc, "index-rejected", brief(exc), run_id)
                old_ids = doc.state.chunk_ids if doc.state else set()
                partial.extend(r.chunk_id for r in records if r.source_uri == doc.info.uri and r.chunk_id not in old_ids)
                partial.extend(new_ids.pop(doc.info.uri, set()) - old_ids)
        res.index.delete_chunks(partial)
        live = [d for d in live if d.outcome is None]
        records = [r for r in records if r.source_uri not in bad]
    for r in records:
        new_ids.setdefault(r.source_uri, set()).add(r.chunk_id)
    return records, live


def _ingest_streamed(
    res: Resources, doc: _Doc, parsed: ParsedDocument, report: BatchReport, run_id: str | None, quarantined: bool
) -> None:
    """One large document in slices: chunk, embed and write a slice at a time, so memory stays flat
    whatever its length. Stale chunks go only after every slice is in; a failure part-way removes
    every new-version row the index holds for it (this attempt's and an earlier attempt's), keeping
    the previous version whole, exactly like a small document. Embeddings are saved to the cache
    at least every CACHE_SAVE_S seconds and on the way out, so a kill or a set-aside part-way
    through an expensive document never costs its embeddings again."""
    cached = res.embedding_cache.load(doc.info.uri)
    doc.cached_hashes = set(cached)
    known = ChainMap(doc.vectors, cached)  # earlier slices first, then the cache shard
    new_ids: dict[str, set[str]] = {}
    offset = chunks_total = tokens_embedded = 0
    saved_at = time.monotonic()
    for part in _slices(parsed, res.settings.ingest.slice_chars):
        if interrupts.stop_requested():  # checkpoint: what this document has embedded so far is kept
            if doc.embedded:
                res.embedding_cache.save(doc.info.uri, dict(known))
            interrupts.raise_if_stopping(f"the next slice of {doc.info.key}")
        piece = _Doc(doc.info, doc.state)
        piece.doc_hash, piece.embedded = doc.doc_hash, doc.embedded  # one set: a repeated text counts once
        _chunk(res, piece, part, run_id)
        for c in piece.chunks:
            c.index += offset
        offset += len(piece.chunks)
        before = set(doc.embedded)
        if piece.outcome is None:
            _embed_missing(res, [piece], report.usage, run_id, cached={doc.info.uri: known})
            doc.vectors.update(piece.vectors)
        if piece.outcome is None and time.monotonic() - saved_at >= CACHE_SAVE_S:
            res.embedding_cache.save(doc.info.uri, dict(known))  # cache before the index write, as for small ones
            saved_at = time.monotonic()
        if piece.outcome is None:
            records, _ = _upsert(res, _records(res, piece, piece.chunks), [piece], new_ids, run_id)
        if piece.outcome is not None:  # set aside part-way: take back every row of the new version
            doc.outcome = piece.outcome
            if doc.embedded:
                res.embedding_cache.save(doc.info.uri, dict(known))
            held = res.index.document_states(doc.info.uri).get(doc.info.uri)
            res.index.delete_chunks((held.chunk_ids if held else set()) - (doc.state.chunk_ids if doc.state else set()))
            return
        fresh = doc.embedded - before
        tokens_embedded += sum(c.token_count for c in piece.chunks if c.chunk_hash in fresh)
        chunks_total += len(records)
        report.chunks_written += len(records)
    if doc.embedded or doc.cached_hashes != set(doc.vectors):
        res.embedding_cache.save(doc.info.uri, doc.vectors)  # exactly the current chunks: the shard never grows
    if doc.state:
        report.chunks_deleted += res.index.delete_chunks(doc.state.chunk_ids - new_ids.get(doc.info.uri, set()))
    if quarantined:
        res.store.delete(quarantine_key(res, doc.info.uri))
    _finish(doc, chunks_total, tokens_embedded)


def key_of(res: Resources, uri: str) -> str:
    base = res.store.uri("")
    if not uri.startswith(base):
        raise ValueError(f"{uri!r} is not in this object store ({base})")
    from urllib.parse import unquote

    return unquote(uri[len(base):]) if base.startswith("file://") else uri[len(base):]


def remove_documents(res: Resources, uris: list[str]) -> int:
    """Full sync / ObjectRemoved: drop a vanished document's chunks, cache shard and quarantine record.

    Each object is checked once more first: a run that planned the deletion earlier must not
    remove a document that an event-triggered run has re-added since. Side records go first so a
    crash never leaves them orphaned behind a deleted document.
    """
    gone = [u for u in uris if res.store.head(key_of(res, u)) is None]
    for uri in gone:
        res.embedding_cache.delete(uri)
        res.store.delete(quarantine_key(res, uri))
    if gone:
        res.index.delete_documents(gone)
    return len(gone)
