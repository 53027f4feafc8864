#!/usr/bin/env python
"""Persona pipeline benchmark: sanitizer throughput and recall vs Presidio, known values at scale.

    make bench-personas                 # about 6 minutes on a quiet 2-core machine
    python bench/persona_bench.py --lines 20000 --skip-million

1. Sanitizer throughput on 100,000 generated log lines (spotline.personas.fake_export: five
   locales, PII in the forms people type), side by side in this one process with Presidio's
   ``BatchAnalyzerEngine`` running the same pattern recognizers on the same rows. Spotline does
   more (known-value redaction over the users table, placeholders, the found-values record) and
   must still be at least as fast (ratio >= 1.0), with recall no lower than Presidio's.
2. Precision, recall and F2 per entity type on the committed labelled sample
   (data/production_sample), Spotline and Presidio side by side: the README's table.
3. Known-value redaction at scale: the same 10,000 lines scanned with 1,000, 100,000 and
   1,000,000 known values in the automaton (build time, lines/s). Goal: lines/s flat.
Writes the tables to bench/out/persona-results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402

from spotline.personas.evaluation import presidio_batch_engine, presidio_spans, score  # noqa: E402
from spotline.personas.fake_export import generate  # noqa: E402
from spotline.personas.sanitize import (  # noqa: E402
    EMAIL,
    PERSON,
    ColumnPolicy,
    KnownValues,
    Sanitizer,
    known_values_of,
    pattern_recognizers,
)

SAMPLE = ROOT / "data" / "production_sample"


def throughput(lines: int) -> tuple[list[str], dict]:
    fx = generate(users=max(lines // 20, 50), messages=lines, seed=99, day=date(2026, 11, 30), canary_users=10)
    rows, texts = list(fx.logs["message_id"]), list(fx.logs["text"])
    recognizers = pattern_recognizers()
    started = time.perf_counter()
    sanitizer = Sanitizer(known_values_of(fx.users, ColumnPolicy()), recognizers)
    ours = {r: [(s.start, s.end, s.entity) for s in sanitizer.scrub(t)[1]] for r, t in zip(rows, texts)}
    ours_s = time.perf_counter() - started
    engine = presidio_batch_engine(recognizers)
    started = time.perf_counter()
    theirs = presidio_spans(engine, rows, texts)
    theirs_s = time.perf_counter() - started
    by_text = dict(zip(rows, texts))
    logs = [l for l in fx.labels if l.table == "logs"]
    recall = {}
    for name, spans in (("spotline", ours), ("presidio", theirs)):
        table = score(by_text, logs, spans)
        caught = sum(r["caught"] for r in table)
        planted = sum(r["planted"] for r in table)
        recall[name] = caught / planted
    out = [
        "| Sanitizer on %d log lines | rows/s | time | recall (all planted values) |" % lines,
        "| --- | --- | --- | --- |",
        f"| Spotline (known values + recognizers, prefiltered) | {lines / ours_s:,.0f} | {ours_s:.1f} s | {recall['spotline']:.4f} |",
        f"| Presidio BatchAnalyzerEngine, same recognizers | {lines / theirs_s:,.0f} | {theirs_s:.1f} s | {recall['presidio']:.4f} |",
        f"| **ratio** | **{theirs_s / ours_s:.2f}x** | | |",
    ]
    return out, {"ratio": theirs_s / ours_s, **recall}


def per_entity() -> list[str]:
    users = pd.read_csv(SAMPLE / "date=2026-11-30" / "users.csv", dtype=str, keep_default_na=False, na_values=[""])
    logs = pd.read_json(SAMPLE / "date=2026-11-30" / "logs.jsonl", lines=True, dtype=False)
    labels = [type("L", (), json.loads(line))() for line in (SAMPLE / "labels.jsonl").read_text().splitlines()]
    labels = [l for l in labels if l.table == "logs"]
    recognizers = pattern_recognizers()
    sanitizer = Sanitizer(known_values_of(users, ColumnPolicy()), recognizers)
    texts = dict(zip(logs["message_id"], logs["text"]))
    ours = {r: [(s.start, s.end, s.entity) for s in sanitizer.spans(t)] for r, t in texts.items()}
    theirs = presidio_spans(presidio_batch_engine(recognizers), list(texts), list(texts.values()))
    a = {r["entity"]: r for r in score(texts, labels, ours)}
    b = {r["entity"]: r for r in score(texts, labels, theirs)}

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    out = ["| Entity (labelled sample, %d log lines) | planted | Spotline P / R / F2 | Presidio patterns P / R / F2 |" % len(texts),
           "| --- | --- | --- | --- |"]
    for entity in sorted(set(a) | set(b)):
        x, y = a.get(entity, {}), b.get(entity, {})
        out.append(f"| {entity} | {x.get('planted', y.get('planted', 0))} | "
                   f"{f(x.get('precision'))} / {f(x.get('recall'))} / {f(x.get('f2'))} | "
                   f"{f(y.get('precision'))} / {f(y.get('recall'))} / {f(y.get('f2'))} |")
    return out


def known_at_scale(skip_million: bool) -> list[str]:
    fx = generate(users=200, messages=10_000, seed=5, day=date(2026, 11, 30))
    texts = list(fx.logs["text"])
    rng = random.Random(1)
    out = ["| Known values in the automaton | build | scan 10,000 lines | lines/s |", "| --- | --- | --- | --- |"]
    sizes = [1_000, 100_000] + ([] if skip_million else [1_000_000])
    for size in sizes:
        known = KnownValues()
        started = time.perf_counter()
        for _, u in fx.users.iterrows():
            known.add(PERSON, u["full_name"])
            known.add(EMAIL, u["email"])
        while len(known) < size:
            first = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9)))
            last = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 10)))
            known.add(PERSON, f"{first} {last}")
            known.add(EMAIL, f"{first}.{last}@example.com")
        known.build()
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        hits = sum(len(known.find(t)) for t in texts)
        scan_s = time.perf_counter() - started
        out.append(f"| {len(known):,} | {build_s:.1f} s | {scan_s:.2f} s ({hits} hits) | {len(texts) / scan_s:,.0f} |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args()
    print(f"# Persona pipeline benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)\n", flush=True)
    sections = []
    table, summary = throughput(args.lines)
    sections.append(table)
    print("\n".join(table) + "\n", flush=True)
    for part in (per_entity(), known_at_scale(args.skip_million)):
        sections.append(part)
        print("\n".join(part) + "\n", flush=True)
    ok = summary["ratio"] >= 1.0 and summary["spotline"] >= summary["presidio"]
    verdict = (f"goal (ratio >= 1.0, recall >= Presidio's): {'met' if ok else 'NOT met'} "
               f"(ratio {summary['ratio']:.2f}, recall {summary['spotline']:.4f} vs {summary['presidio']:.4f})")
    print(verdict)
    out = ROOT / "bench" / "out" / "persona-results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Persona benchmark, {time.strftime('%Y-%m-%d')}\n\n" +
                   "\n\n".join("\n".join(s) for s in sections) + f"\n\n{verdict}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
