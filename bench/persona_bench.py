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
4. Persona prompts per minute: the personas flow on the committed sample with the local model
   (Gemma 3 270M, the help centre's Markdown articles as the index, a temporary Prefect server),
   and the cost per 1,000 published prompts on the aws generator route (Claude Haiku 4.5) from
   the price table, at the token counts this run measured (the local tokenizer's: Claude's
   counts differ by some percent; the local prompt also carries few-shot examples Claude's needs
   fewer of, so this errs high). `--skip-generation` leaves it out.
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


def generation() -> list[str]:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    os.environ.update({"SPOTLINE_HOME": str(work), "SPOTLINE_STORE__ROOT": str(work / "store"),
                       "SPOTLINE_INDEX__PATH": str(work / "index"), "HF_HUB_OFFLINE": "1",
                       "SPOTLINE_PERSONAS__PSEUDONYM_KEY": "env:BENCH_PSEUDONYM_KEY",
                       "BENCH_PSEUDONYM_KEY": "bench-key-" + "0" * 24, "SPOTLINE_LLM__CACHE_ENABLED": "false"})
    from prefect.testing.utilities import prefect_test_harness

    from flows.ingest import ingest
    from flows.personas import personas
    from spotline.resources import get_resources
    from spotline.settings import get_settings

    get_settings.cache_clear()
    res = get_resources()
    for path in sorted((ROOT / "data" / "sample_corpus").rglob("*.md")):
        res.store.put(f"corpus/{path.relative_to(ROOT / 'data' / 'sample_corpus')}", path.read_bytes())
    for path in sorted((SAMPLE / "date=2026-11-30").iterdir()):
        res.store.put(f"exports/production/date=2026-11-30/{path.name}", path.read_bytes())
    with prefect_test_harness():
        ingest()
        started = time.perf_counter()
        out = personas(day="2026-11-30")
        seconds = time.perf_counter() - started
    calls = [r for r in res.gateway.ledger.rows() if r.outcome == "ok"]
    model_s = sum(r.latency_s for r in calls)
    tokens_in = sum(r.input_tokens for r in calls)
    tokens_out = sum(r.output_tokens for r in calls)
    price_in, price_out = res.settings.prices.llm_per_1m["us.anthropic.claude-haiku-4-5-20251001-v1:0"]
    per_card = (tokens_in * price_in + tokens_out * price_out) / 1e6 / max(len(calls), 1)
    per_1000 = per_card * len(calls) / max(out["prompts"], 1) * 1000
    return [
        "| Persona generation (committed sample, local Gemma 3 270M) | value |", "| --- | --- |",
        f"| cards asked of the model | {len(calls)} ({tokens_in} in / {tokens_out} out tokens, {model_s:.0f} s in the model) |",
        f"| personas / prompts published | {out['personas']} / {out['prompts']} |",
        f"| whole run (sanitize, group, generate, filter, publish) | {seconds:.0f} s |",
        f"| **prompts per minute** (whole run) | **{out['prompts'] / seconds * 60:.0f}** |",
        f"| model cards per minute | {len(calls) / model_s * 60:.1f} |",
        f"| **cost per 1,000 published prompts**, generator route on aws (Claude Haiku 4.5, ${price_in}/${price_out} per 1M) | **${per_1000:.4f}** |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args()
    print(f"# Persona pipeline benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)\n", flush=True)
    sections = []
    table, summary = throughput(args.lines)
    sections.append(table)
    print("\n".join(table) + "\n", flush=True)
    for make in (per_entity, lambda: known_at_scale(args.skip_million),
                 *([] if args.skip_generation else [generation])):
        part = make()
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
