"""First-contact benchmark: ONNX Runtime against torch, side by side in one run.

    make bench-start        (about 25 minutes on 2 cores; --docs 300 for a quick look)

1. `spotline query` as a whole process (cold process, warm disk), 5 runs per runtime, interleaved;
2. a single-object ingest on a running local stack (server, catalog, process worker): from the flow
   run's start to the document being searchable, 3 runs per runtime, interleaved. Each flow run is
   a new process, as on an ECS task, so this includes loading the model;
3. bulk embedding throughput on the chunks of the 2,000-document benchmark corpus
   (bench/make_corpus.py, cut by Spotline's own parser and chunker): the process pool with one
   ONNX Runtime thread per worker against today's pool with one torch thread per worker, each half
   of the corpus in the order A B, then B A, so drift in this VM weighs on both alike;
4. agreement: the worst cosine between the two runtimes' vectors over all those chunks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLE = ROOT / "data" / "sample_corpus"
PREFIX = "corpus/help-centre/"
RUNTIMES = ("onnx", "torch")


def query_process(env: dict[str, str], runs: int) -> dict[str, list[float]]:
    cmd = [str(Path(sys.executable).parent / "spotline"), "query", "How do I get a refund?", "-k", "3"]
    times: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
    for i in range(runs):
        for rt in RUNTIMES if i % 2 == 0 else reversed(RUNTIMES):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env={**env, "SPOTLINE_EMBEDDING__RUNTIME": rt}, capture_output=True,
                                 text=True, cwd=ROOT)
            times[rt].append(time.perf_counter() - t0)
            assert out.returncode == 0 and "refunds.md" in out.stdout, out.stderr[-2000:]
    return times


def searchable(index: Path, key: str) -> bool:
    from spotline.index.lance import LanceIndex

    dataset = LanceIndex(index)._dataset()
    if dataset is None:
        return False
    uris = dataset.to_table(columns=["source_uri"]).column("source_uri").to_pylist()
    return any(u.endswith("/" + key) for u in uris)


def event_ingest(stack, store: Path, index: Path, runs: int) -> dict[str, list[float]]:
    from prefect.deployments import run_deployment

    times: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
    n = 0
    for i in range(runs):
        for rt in RUNTIMES if i % 2 == 0 else reversed(RUNTIMES):
            n += 1
            key = f"corpus/events/note-{n}.md"
            (store / key).parent.mkdir(parents=True, exist_ok=True)
            (store / key).write_text(f"# Event note {n}\n\nWorkspace {n} asked how refunds for annual plans work.\n")
            run = run_deployment("ingest-documents/ingest-adhoc", parameters={"key": key}, timeout=0,
                                 job_variables={"env": {"SPOTLINE_EMBEDDING__RUNTIME": rt}})
            started = stack.wait(run.id, lambda r: r.start_time is not None, 300, "the run to start", poll_s=0.05)
            while not searchable(index, key):
                time.sleep(0.05)
            found = time.time()
            final = stack.wait(run.id, lambda r: r.state.is_final(), 300, "the run to finish")
            assert final.state.is_completed(), final.state
            times[rt].append(found - started.start_time.timestamp())
    return times


def corpus_chunks(work: Path, docs: int) -> list[str]:
    from make_corpus import generate_corpus

    from spotline.ingestion.chunking import Chunker
    from spotline.ingestion.parsing import SetAside, parse_document
    from spotline.resources import get_resources

    folder = work / "corpus"
    generate_corpus(folder, docs=docs)
    res = get_resources()
    chunker: Chunker = res.chunker
    texts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            doc = parse_document(str(path.relative_to(folder)), path.read_bytes())
        except SetAside:
            continue
        texts += [c.embed_text for c in chunker.split(doc)]
    return texts


def pools(texts: list[str]) -> tuple[dict[str, float], dict[str, float], float]:
    import numpy as np

    from spotline.embedding.local import LocalEmbedder
    from spotline.settings import EmbeddingSettings

    halves = [texts[0::2], texts[1::2]]
    embedders = {rt: LocalEmbedder(EmbeddingSettings(kind="local", pool_runtime=rt, pool_min_texts=1)) for rt in RUNTIMES}
    startup = {}
    for rt, e in embedders.items():  # pools started before any clock, as ingest_bench does
        t0 = time.perf_counter()
        e.start_pool()
        startup[rt] = time.perf_counter() - t0
    wall = {rt: 0.0 for rt in RUNTIMES}
    vectors = {rt: [] for rt in RUNTIMES}
    for h, half in enumerate(halves):
        for rt in RUNTIMES if h == 0 else reversed(RUNTIMES):
            t0 = time.perf_counter()
            vectors[rt].append(embedders[rt].embed(half).vectors)
            wall[rt] += time.perf_counter() - t0
    for e in embedders.values():
        e.close()
    a, b = (np.concatenate(vectors[rt]) for rt in RUNTIMES)
    return wall, startup, float((a * b).sum(axis=1).min())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--query-runs", type=int, default=5)
    ap.add_argument("--event-runs", type=int, default=3)
    args = ap.parse_args()

    from deployments.localstack import LocalStack

    work = Path(tempfile.mkdtemp(prefix="spotline-startbench-"))
    store, index = work / "store", work / "index"
    shutil.copytree(SAMPLE, store / PREFIX)
    env_paths = {"SPOTLINE_HOME": str(work), "SPOTLINE_STORE__ROOT": str(store), "SPOTLINE_INDEX__PATH": str(index)}
    os.environ.update(env_paths)
    lines = [f"first-contact benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs"]
    stack = LocalStack.start(work / "stack", env_paths)
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: stack.api}):
            env = {**os.environ, "PREFECT_API_URL": stack.api, "PREFECT_LOGGING_LEVEL": "WARNING"}
            subprocess.run([str(Path(sys.executable).parent / "spotline"), "ingest", "--prefix", PREFIX], env=env,
                           cwd=ROOT, check=True, capture_output=True)
            q = query_process(env, args.query_runs)
            lines.append("`spotline query` process wall time (warm disk), median of "
                         f"{args.query_runs}: onnx {statistics.median(q['onnx']):.2f} s, "
                         f"torch {statistics.median(q['torch']):.2f} s "
                         f"({statistics.median(q['torch']) / statistics.median(q['onnx']):.1f}x faster; goal onnx <= 2 s)")
            stack.start_worker("spotline-local", "main")
            ev = event_ingest(stack, store, index, args.event_runs)
            lines.append("single-object ingest, flow start -> searchable, median of "
                         f"{args.event_runs}: onnx {statistics.median(ev['onnx']):.1f} s "
                         f"(max {max(ev['onnx']):.1f}), torch {statistics.median(ev['torch']):.1f} s "
                         f"(max {max(ev['torch']):.1f}) (goal onnx <= 2 s)")
    finally:
        stack.stop()
    texts = corpus_chunks(work, args.docs)
    wall, startup, worst = pools(texts)
    ratio = (len(texts) / wall["onnx"]) / (len(texts) / wall["torch"])
    lines.append(f"bulk embedding, {args.docs} documents = {len(texts)} chunks, pool of {os.cpu_count()} processes x 1 "
                 f"thread: onnx {len(texts) / wall['onnx']:.1f} chunks/s, torch {len(texts) / wall['torch']:.1f} "
                 f"chunks/s (onnx/torch {ratio:.2f}x; goal >= 1.0); pool start onnx {startup['onnx']:.1f} s, "
                 f"torch {startup['torch']:.1f} s")
    lines.append(f"agreement: worst cosine onnx vs torch over {len(texts)} chunks {worst:.6f} (goal >= 0.9999)")
    print("\n".join(lines))
    out = ROOT / "bench" / "out" / "first-contact-results.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
