#!/usr/bin/env python
"""Ingestion benchmark: Spotline end to end vs the bare model vs LlamaIndex, measured in one run.

    make bench                       # 2,000 generated documents (about 40 minutes on 2 cores)
    python bench/ingest_bench.py --docs 300 --skip-llamaindex   # a quick look

One machine, one model (all-MiniLM-L6-v2, CPU); every model is loaded and every heavy library
imported before any clock starts.
The corpus is generated (bench/make_corpus.py) and dealt into two halves, part-a and part-b
(even and odd documents, so both have the same mix). Each half is measured four ways, the second
half in the reverse order (A B C D, then D C B A), so a machine that drifts during the run (this
VM drifts 10-25% between runs, and steal time is printed) weighs on every contender alike:
- Spotline: the real `ingest-documents` flow against a local Prefect server;
- the bare model, plain: exactly the chunk texts Spotline wrote, in one SentenceTransformer.encode()
  call in this process (what the issue calls the ceiling; the pool below beats it);
- the bare model, pooled: the same texts through Spotline's embedder process pool alone (shows
  what the pipeline around the model costs, with the same compute layout);
- LlamaIndex IngestionPipeline: SentenceSplitter with the same tokenizer, chunk size and overlap,
  HuggingFaceEmbedding of the same model, LanceDBVectorStore. It is given documents already
  parsed by Spotline's parser, and its parsing is not timed: that favours it.
Then over the whole corpus: a second Spotline run on the unchanged corpus (embedding calls, speed-up)
and a run after editing 5% of the documents (which chunks were re-embedded).
Wall time, CPU time (this process and its workers) and steal time are printed for each. The table
goes to stdout and bench/out/ingest-results.md.
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


PARTS = ("part-a", "part-b")
TICK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _cpu_of(pids: set[int]) -> float:
    """user+sys of these processes and of their reaped children (a worker that exits mid-measurement
    moves into its parent's cutime/cstime, so it is still counted)."""
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


def _steal() -> float:
    """Seconds of CPU the hypervisor took from this VM, summed over its CPUs."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8]) / TICK


class Meter:
    """Wall, CPU (this process and its workers; the Prefect server apart) and steal for one measurement."""

    def __init__(self, server_pid: int):
        self.server = server_pid

    def mine(self) -> float:
        server_tree = {self.server} | _descendants(self.server)
        return _cpu_of(({os.getpid()} | _descendants(os.getpid())) - server_tree)

    def srv(self) -> float:
        return _cpu_of({self.server} | _descendants(self.server))

    def __enter__(self):
        self.t, self.c, self.s, self.st = time.perf_counter(), self.mine(), self.srv(), _steal()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.cpu, self.server_cpu, self.steal = self.mine() - self.c, self.srv() - self.s, _steal() - self.st


class Totals:
    def __init__(self):
        self.wall = self.cpu = self.server_cpu = self.steal = 0.0
        self.parts: list[float] = []

    def add(self, m: Meter) -> None:
        self.wall += m.wall
        self.cpu += m.cpu
        self.server_cpu += m.server_cpu
        self.steal += m.steal
        self.parts.append(m.wall)

    def describe(self, chunks: int) -> str:
        return (f"{self.wall:.1f} s = {chunks / self.wall:.1f} chunks/s "
                f"(halves {' + '.join(f'{p:.1f}' for p in self.parts)}; CPU {self.cpu:.0f} s, "
                f"steal {100 * self.steal / (self.wall * os.cpu_count()):.0f}%)")


def deal_into_parts(corpus: Path) -> None:
    """Even-numbered documents to part-a, odd to part-b (file names end in -NNNNN.ext)."""
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        number = int(path.stem.rsplit("-", 1)[1])
        target = corpus / PARTS[number % 2] / path.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    for d in sorted((p for p in corpus.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


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

    from deployments import devserver

    t = time.perf_counter()
    generate_corpus(work / "store" / "corpus", args.docs, args.seed)
    deal_into_parts(work / "store" / "corpus")
    print(f"generated {args.docs} documents in {time.perf_counter() - t:.1f}s", flush=True)

    server, api = devserver.start(work)
    os.environ["PREFECT_API_URL"] = api
    try:
        rows = run(work, args, edit_fraction, server.pid)
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


def run(work: Path, args, edit_fraction, server_pid: int) -> list[tuple[str, str]]:
    from flows.ingest import ingest
    from spotline.resources import get_resources

    res = get_resources()
    from spotline.embedding.local import LocalEmbedder

    # Every model is loaded before any clock starts: the in-process one (bare), the worker pool
    # (Spotline) and, in llamaindex_setup, LlamaIndex's own copy.
    model = LocalEmbedder(res.settings.embedding)
    model.model.encode(["warm-up sentence"] * 128)
    t = time.perf_counter()
    model.start_pool()
    pool_start = time.perf_counter() - t
    model.embed(["warm-up sentence"] * model.settings.pool_min_texts)
    res.index.count()  # imports lancedb (~9 s here), as LlamaIndex's vector store import does before its clock
    counting = CountingEmbedder(model)
    res.__dict__["_embedder"] = counting
    llama = None if args.skip_llamaindex else llamaindex_setup(work, res)
    batch = res.settings.embedding.batch_size

    spot, plain, pooled, li = Totals(), Totals(), Totals(), Totals()
    new = failed = li_docs = li_nodes = 0
    records: list[dict] = []
    for n, part in enumerate(PARTS):
        prefix = f"corpus/{part}/"
        texts = chunk_texts(res, prefix)  # what Spotline will write, so the halves can run in any order

        def spotline():
            nonlocal new, failed
            with Meter(server_pid) as m:
                summary = ingest(prefix=prefix)
            new, failed = new + summary.new, failed + summary.failed
            spot.add(m)
            uri = res.store.uri(prefix)
            written = [r for r in res.index.all_records() if r["source_uri"].startswith(uri)]
            assert sorted(f"{r['title']}\n{r['text']}" for r in written) == sorted(texts), "bare runs saw other chunks"
            records.extend(written)
            print(f"{part} spotline: {m.wall:.1f}s, {summary.new} docs, {len(written)} chunks, CPU {m.cpu:.0f}s, "
                  f"Prefect server CPU {m.server_cpu:.1f}s", flush=True)

        def bare_plain():
            with Meter(server_pid) as m:
                model.model.encode(texts, batch_size=batch, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            plain.add(m)
            print(f"{part} bare plain: {m.wall:.1f}s, CPU {m.cpu:.0f}s", flush=True)

        def bare_pooled():
            with Meter(server_pid) as m:
                model.embed(texts)
            pooled.add(m)
            print(f"{part} bare pooled: {m.wall:.1f}s, CPU {m.cpu:.0f}s", flush=True)

        def llamaindex():
            nonlocal li_docs, li_nodes
            docs, nodes, m = llama(part, server_pid)
            li_docs, li_nodes = li_docs + docs, li_nodes + nodes
            li.add(m)
            print(f"{part} llamaindex: {m.wall:.1f}s, {docs} docs, {nodes} nodes, CPU {m.cpu:.0f}s", flush=True)

        steps = [spotline, bare_pooled, bare_plain] + ([llamaindex] if llama else [])
        for step in (reversed(steps) if n % 2 else steps):
            step()

    chunks = len(records)
    tokens = sum(r["token_count"] for r in records)

    # unchanged re-run over the whole corpus
    counting.texts, counting.calls = [], 0
    t = time.perf_counter()
    second = ingest(prefix="corpus/")
    rerun = time.perf_counter() - t
    rerun_calls, rerun_texts = counting.calls, len(counting.texts)
    print(f"unchanged re-run: {rerun:.2f}s, {rerun_calls} embedding calls", flush=True)

    # edit a fraction of the documents
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

    e2e = spot.wall
    ratio_plain, ratio_pooled = plain.wall / e2e, pooled.wall / e2e
    rows = [
        ("documents (generated, in two interleaved halves)", f"{args.docs} ({failed} set aside)"),
        ("chunks / tokens embedded", f"{chunks} / {tokens}"),
        ("embedding workers (processes x torch threads)", f"{model.workers} x 1 (pool started in {pool_start:.1f} s, "
                                                          "before the clocks)"),
        ("Spotline end-to-end", spot.describe(chunks)),
        ("Spotline end-to-end throughput", f"{new / e2e:.1f} docs/s, {chunks / e2e:.1f} chunks/s, "
                                          f"{tokens / e2e:,.0f} tokens/s"),
        ("Prefect server CPU during the Spotline runs", f"{spot.server_cpu:.1f} s"),
        ("bare model, plain encode() in-process (ceiling)", plain.describe(chunks)),
        ("end-to-end / bare plain (goal >= 0.8)", f"{ratio_plain:.2f}x {'PASS' if ratio_plain >= 0.8 else 'FAIL'}"),
        ("bare model, same chunks on Spotline's worker pool", pooled.describe(chunks)),
        ("end-to-end / bare pooled (pipeline overhead)", f"{ratio_pooled:.2f}x"),
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
    if llama:
        ratio = (new / e2e) / (li_docs / li.wall)
        rows += [
            ("LlamaIndex IngestionPipeline (parsing not timed)", f"{li.describe(li_nodes)}, {li_docs / li.wall:.1f} docs/s "
                                                                f"({li_nodes} chunks)"),
            ("Spotline / LlamaIndex docs/s (goal >= 1.0)", f"{ratio:.2f}x {'PASS' if ratio >= 1.0 else 'FAIL'}"),
        ]
    model.close()
    return rows


def chunk_texts(res, prefix: str) -> list[str]:
    """The embed texts of every chunk under prefix, from Spotline's own parser and chunker (untimed)."""
    from spotline.ingestion.parsing import SetAside, parse_document

    texts = []
    for info in res.store.list(prefix):
        try:
            texts += [c.embed_text for c in res.chunker.split(parse_document(info.key, res.store.get(info.key)))]
        except SetAside:
            continue
    return texts


def llamaindex_setup(work: Path, res):
    """Build LlamaIndex's pipeline parts once (its model loads here, untimed); return a runner per half."""
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.lancedb import LanceDBVectorStore
    from tokenizers import Tokenizer

    from spotline.embedding.local import model_path
    from spotline.ingestion.parsing import SetAside, parse_document

    tok = Tokenizer.from_file(str(res.tokenizer_path))
    tok.no_truncation()
    tok.no_padding()  # tokenizer.json pads to 128: counts must be real lengths
    c = res.settings.chunking
    splitter = SentenceSplitter(chunk_size=c.chunk_tokens, chunk_overlap=c.overlap_tokens,
                                tokenizer=lambda s: tok.encode(s, add_special_tokens=False).ids)
    embed = HuggingFaceEmbedding(model_name=str(model_path(res.settings.embedding)), device="cpu",
                                 embed_batch_size=res.settings.embedding.batch_size, normalize=True)
    embed.get_text_embedding_batch(["warm-up sentence"] * 128)

    def run_part(part: str, server_pid: int):
        docs = []
        for info in res.store.list(f"corpus/{part}/"):
            try:
                parsed = parse_document(info.key, res.store.get(info.key))
            except SetAside:
                continue
            docs.append(Document(text=parsed.text, metadata={"title": parsed.title},
                                 excluded_llm_metadata_keys=["title"]))
        pipeline = IngestionPipeline(
            transformations=[splitter, embed],
            vector_store=LanceDBVectorStore(uri=str(work / "llamaindex-lance"), table_name=part.replace("-", "_"),
                                            mode="overwrite"),
        )
        with Meter(server_pid) as m:
            nodes = pipeline.run(documents=docs)
        return len(docs), len(nodes), m

    return run_part


if __name__ == "__main__":
    sys.exit(main())
