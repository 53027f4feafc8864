#!/usr/bin/env python
"""Ingestion benchmark: Spotline end to end vs the bare model vs LlamaIndex, measured in one run.

    make bench                       # 2,000 generated documents (about 30 minutes on 2 cores)
    python bench/ingest_bench.py --docs 300 --skip-llamaindex   # a quick look

What it does, in this order, on one machine and one model (all-MiniLM-L6-v2, CPU):
1. generates the corpus (bench/make_corpus.py) into a fresh object store;
2. Spotline: the real `ingest-documents` flow against a local Prefect server -> docs/s, chunks/s, tokens/s;
3. the bare model: the same chunk texts through SentenceTransformer.encode in one plain call (the ceiling);
4. a second Spotline run on the unchanged corpus -> embedding calls and the speed-up;
5. edits 5% of the documents and runs again -> which chunks were re-embedded;
6. LlamaIndex IngestionPipeline (SentenceSplitter with the same tokenizer, chunk size and overlap,
   HuggingFaceEmbedding of the same model, LanceDBVectorStore) on the same documents. It is given
   documents already parsed by Spotline's parser, and its parsing is not timed: that favours it.
Prints a table of figures and ratios, and writes it to bench/out/ingest-results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def setup_env(work: Path) -> None:
    os.environ.update(
        SPOTLINE_HOME=str(work),
        SPOTLINE_STORE__ROOT=str(work / "store"),
        SPOTLINE_INDEX__PATH=str(work / "index"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(work / "prefect-client"),
        PREFECT_LOGGING_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
    )


class CountingEmbedder:
    def __init__(self, inner):
        self.inner, self.model_id, self.dimension = inner, inner.model_id, inner.dimension
        self.texts: list[str] = []
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.embed(texts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--edit-fraction", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--skip-llamaindex", action="store_true")
    args = ap.parse_args()

    work = args.out / "ingest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    setup_env(work)

    from make_corpus import edit_fraction, generate_corpus

    from spotline import devserver

    t = time.perf_counter()
    generate_corpus(work / "store" / "corpus", args.docs, args.seed)
    print(f"generated {args.docs} documents in {time.perf_counter() - t:.1f}s", flush=True)

    server, api = devserver.start(work)
    os.environ["PREFECT_API_URL"] = api
    try:
        rows = run(work, args, edit_fraction)
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        devserver.stop_process(server.pid)

    width = max(len(r[0]) for r in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    table = "\n".join(lines)
    print("\n" + table)
    (args.out / "ingest-results.md").write_text(table + "\n")
    return 0


def run(work: Path, args, edit_fraction) -> list[tuple[str, str]]:
    from flows.ingest import ingest
    from spotline.resources import get_resources

    res = get_resources()
    from spotline.embedding.local import LocalEmbedder

    model = LocalEmbedder(res.settings.embedding)
    model.embed(["warm-up sentence"] * 128)  # first-call allocations, not part of any measurement
    counting = CountingEmbedder(model)
    res.__dict__["_embedder"] = counting

    # 1. Spotline end to end
    t = time.perf_counter()
    first = ingest(prefix="corpus/")
    e2e = time.perf_counter() - t
    records = res.index.all_records()
    chunks = len(records)
    tokens = sum(r["token_count"] for r in records)
    print(f"spotline first run: {e2e:.1f}s, {first.new} docs, {chunks} chunks", flush=True)

    # 2. the bare model on exactly those chunk texts
    texts = [f"{r['title']}\n{r['text']}" for r in records]
    t = time.perf_counter()
    model.model.encode(texts, batch_size=res.settings.embedding.batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    bare = time.perf_counter() - t
    print(f"bare model: {bare:.1f}s for {chunks} chunks", flush=True)

    # 3. unchanged re-run
    counting.texts, counting.calls = [], 0
    t = time.perf_counter()
    second = ingest(prefix="corpus/")
    rerun = time.perf_counter() - t
    rerun_calls, rerun_texts = counting.calls, len(counting.texts)
    print(f"unchanged re-run: {rerun:.2f}s, {rerun_calls} embedding calls", flush=True)

    # 4. edit a fraction of the documents
    before = {r["chunk_hash"] for r in records}
    edited = edit_fraction(work / "store" / "corpus", args.edit_fraction, seed=args.seed + 4)
    counting.texts, counting.calls = [], 0
    t = time.perf_counter()
    third = ingest(prefix="corpus/")
    edit_wall = time.perf_counter() - t
    after = res.index.all_records()
    new_hashes = {r["chunk_hash"] for r in after} - before
    edited_uris = {res.store.uri(f"corpus/{p}") for p in edited}
    edited_chunk_texts = {f"{r['title']}\n{r['text']}" for r in after if r["source_uri"] in edited_uris}
    from_unedited = [x for x in counting.texts if x not in edited_chunk_texts]
    print(f"edit run: {len(edited)} edited, {len(counting.texts)} chunks embedded", flush=True)

    rows = [
        ("documents (generated)", f"{args.docs} ({first.failed} set aside)"),
        ("chunks / tokens embedded", f"{chunks} / {tokens}"),
        ("Spotline end-to-end wall time", f"{e2e:.1f} s"),
        ("Spotline end-to-end throughput", f"{first.new / e2e:.1f} docs/s, {chunks / e2e:.1f} chunks/s, "
                                          f"{tokens / e2e:,.0f} tokens/s"),
        ("bare model, same chunks, one encode() call", f"{bare:.1f} s = {chunks / bare:.1f} chunks/s"),
        ("end-to-end / bare model (goal >= 0.8)", f"{bare / e2e:.2f}x {'PASS' if bare / e2e >= 0.8 else 'FAIL'}"),
        ("unchanged re-run: embedding calls (goal 0)", f"{rerun_calls} calls, {rerun_texts} texts "
                                                       f"{'PASS' if rerun_texts == 0 else 'FAIL'}"),
        ("unchanged re-run: wall time", f"{rerun:.2f} s ({second.unchanged} unchanged, {second.failed} still set aside)"),
        ("first run / unchanged re-run (goal >= 20x)", f"{e2e / rerun:.0f}x {'PASS' if e2e / rerun >= 20 else 'FAIL'}"),
        (f"edit {args.edit_fraction:.0%}: documents edited / changed", f"{len(edited)} / {third.changed}"),
        ("edit: chunks re-embedded / new chunk texts", f"{len(counting.texts)} / {len(new_hashes)} "
                                                      f"({len(counting.texts) / chunks:.1%} of all chunks)"),
        ("edit: chunks re-embedded from unedited docs (goal 0)", f"{len(from_unedited)} "
                                                                  f"{'PASS' if not from_unedited else 'FAIL'}"),
        ("edit run wall time", f"{edit_wall:.1f} s"),
    ]
    for name, value in rows:
        print(f"  {name}: {value}", flush=True)
    if not args.skip_llamaindex:
        try:
            rows += llamaindex(work, res, first.new / e2e)
        except Exception as exc:  # keep the figures measured so far
            rows.append(("LlamaIndex IngestionPipeline", f"FAILED: {type(exc).__name__}: {str(exc)[:200]}"))
    return rows


def llamaindex(work: Path, res, spotline_docs_per_s: float) -> list[tuple[str, str]]:
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.lancedb import LanceDBVectorStore
    from tokenizers import Tokenizer

    from spotline.embedding.local import model_path
    from spotline.parsing import SetAside, parse_document

    docs = []
    for info in res.store.list("corpus/"):
        try:
            parsed = parse_document(info.key, res.store.get(info.key))
        except SetAside:
            continue
        docs.append(Document(text=parsed.text, metadata={"title": parsed.title},
                             excluded_llm_metadata_keys=["title"]))
    tok = Tokenizer.from_file(str(res.tokenizer_path))
    tok.no_truncation()
    tok.no_padding()  # tokenizer.json pads to 128: counts must be real lengths
    c = res.settings.chunking
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=c.chunk_tokens, chunk_overlap=c.overlap_tokens,
                             tokenizer=lambda s: tok.encode(s, add_special_tokens=False).ids),
            HuggingFaceEmbedding(model_name=str(model_path(res.settings.embedding)), device="cpu",
                                 embed_batch_size=res.settings.embedding.batch_size, normalize=True),
        ],
        vector_store=LanceDBVectorStore(uri=str(work / "llamaindex-lance"), table_name="bench", mode="overwrite"),
    )
    t = time.perf_counter()
    nodes = pipeline.run(documents=docs)
    wall = time.perf_counter() - t
    print(f"llamaindex: {wall:.1f}s, {len(docs)} docs, {len(nodes)} nodes", flush=True)
    ratio = spotline_docs_per_s / (len(docs) / wall)
    return [
        ("LlamaIndex IngestionPipeline (parsing not timed)", f"{wall:.1f} s, {len(docs) / wall:.1f} docs/s, "
                                                            f"{len(nodes) / wall:.1f} chunks/s ({len(nodes)} chunks)"),
        ("Spotline / LlamaIndex docs/s (goal >= 1.0)", f"{ratio:.2f}x {'PASS' if ratio >= 1.0 else 'FAIL'}"),
    ]


if __name__ == "__main__":
    sys.exit(main())
