#!/usr/bin/env python
"""Memory and isolation with one huge text document: peak RSS for a 40 MB document vs a 1 MB one.

    make bench-huge                              # 1 MB and 40 MB on default limits (a few minutes)
    python bench/huge_doc_bench.py --full        # also the 40 MB document streamed whole (~30 min)

Each measurement is a fresh process running the real `ingest-documents` flow against a local
Prefect server, over the 58-file sample help centre plus one generated text document of the given
size (help-centre sentences, no repeats that the embedding cache could skip). The process reports
its own peak RSS (ru_maxrss: the read, parse, chunk and write of the document, and the in-process
model) and the largest of its embedding workers' (VmHWM, read while they are alive); the bench
prints both and the ratio of the process peaks.

On defaults a 40 MB text (~8M tokens) is over `chunking.max_document_tokens` (1M): counting
stops at the limit, the document is set aside as too-large, and the sample's good files are
indexed beside it. `--full` lifts the limit so the 40 MB document streams through in slices: the
figure that shows memory stays flat whatever the length. The goal is a ratio <= 2.0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

WORDS = ("receipt approval invoice mileage travel policy card refund statement ledger manager budget vendor "
         "category reimbursement limit export payroll currency workspace admin audit report subscription seat").split()


def make_text(size: int, seed: int) -> bytes:
    """Paragraphs of varied sentences: every chunk is new text, as in a real export."""
    rng = random.Random(seed)
    out, total, n = [], 0, 0
    while total < size:
        n += 1
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + f" (ref {n}-{i})."
                     for i in range(rng.randint(3, 7))]
        para = " ".join(sentences) + "\n\n"
        out.append(para)
        total += len(para)
    return "".join(out).encode()[:size]


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(root: int) -> list[int]:
    """Live descendants of `root` (the embedding pool's fork server and its workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def measure_one(size: int) -> dict:
    """Runs in the child process: one ingest with the big document, then report."""
    from flows.ingest import ingest
    from spotline.settings import get_settings

    get_settings.cache_clear()
    started = time.perf_counter()
    summary = ingest(prefix="corpus/")
    wall = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = max([_peak_rss_mb(p) for p in _descendants(os.getpid())] or [0.0])  # still alive: read /proc
    big = [s for s in summary.set_aside if s["key"].endswith("big.txt")]
    return {
        "size_mb": size / 1e6, "wall_s": round(wall, 1), "peak_rss_mb": round(own), "worker_peak_rss_mb": round(workers),
        "indexed": summary.new, "set_aside": len(summary.set_aside), "chunks_written": summary.chunks_written,
        "big_doc": big[0]["reason"] + ": " + big[0]["detail"] if big else "indexed",
    }


def run(size: int, api: str, base: Path, tokens: int | None) -> dict:
    work = base / f"run-{size}-{tokens or 'default'}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ROOT / "data" / "sample_corpus", work / "store" / "corpus" / "help-centre")
    (work / "store" / "corpus" / "big.txt").write_bytes(make_text(size, seed=size))
    env = {**os.environ, "PREFECT_API_URL": api, "SPOTLINE_STORE__ROOT": str(work / "store"),
           "SPOTLINE_INDEX__PATH": str(work / "index"), "SPOTLINE_HOME": str(work), "PYTHONPATH": str(ROOT),
           "PREFECT_LOGGING_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    if tokens:
        env["SPOTLINE_CHUNKING__MAX_DOCUMENT_TOKENS"] = str(tokens)
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import huge_doc_bench as b; " \
           f"print('RESULT ' + json.dumps(b.measure_one({size})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"measurement failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    shutil.rmtree(work, ignore_errors=True)
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also stream the 40 MB document whole (limit lifted)")
    ap.add_argument("--small-mb", type=float, default=1.0)
    ap.add_argument("--big-mb", type=float, default=40.0)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from deployments import devserver

    base = Path(tempfile.mkdtemp(prefix="spotline-huge-bench-"))
    proc, api = devserver.start(base / "server")
    try:
        small, big = int(args.small_mb * 1e6), int(args.big_mb * 1e6)
        rows = [("1 MB, defaults", run(small, api, base, None)), (f"{args.big_mb:g} MB, defaults", run(big, api, base, None))]
        if args.full:
            rows.append((f"{args.big_mb:g} MB, streamed whole", run(big, api, base, 20_000_000)))
    finally:
        devserver.stop_process(proc.pid)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nhuge-document benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs")
    print(f"{'case':<26} {'wall s':>7} {'peak RSS MB':>12} {'worker MB':>10} {'docs indexed':>13} {'chunks':>7}  big document")
    for name, r in rows:
        print(f"{name:<26} {r['wall_s']:>7} {r['peak_rss_mb']:>12} {r['worker_peak_rss_mb']:>10} "
              f"{r['indexed']:>13} {r['chunks_written']:>7}  {r['big_doc'][:90]}")
    base_rss = rows[0][1]["peak_rss_mb"]
    for name, r in rows[1:]:
        ratio = r["peak_rss_mb"] / base_rss
        print(f"peak RSS {name} / 1 MB: {ratio:.2f}x (goal <= 2.0: {'PASS' if ratio <= 2.0 else 'FAIL'})")


if __name__ == "__main__":
    main()
