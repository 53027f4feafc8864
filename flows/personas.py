"""Nightly personas: yesterday's production usage -> a sanitized, versioned suite of synthetic users and prompts.

The story of a run:
1. Work out the day (default: yesterday in the configured time zone). Started by an export's
   object event, wait for its `_SUCCESS` marker: a half-written export is not read.
2. Read the export and sanitize it before anything else: keyed pseudonyms, recognizers,
   known-value redaction. Bad rows are set aside with their reasons; an unreadable or empty export
   fails here. The leak scan checks the sanitized snapshot: one known value left fails the run.
3. Group users by what they asked (embeddings of sanitized activity, k-means) and retrieve each
   group's help-centre context from the index.
4. Per group, the generator route writes persona cards from the group's plan, area and mood; the
   leak scan checks what is sent first. Finished groups are persisted: a resumed run skips them.
5. Strategies turn each persona's first message into every hard category; the quality filter
   drops what fails its checks and near-duplicates; a category below its minimum fails the run.
6. The leak scan checks everything that will be published. Then publish the dataset (personas
   and prompts, JSONL, manifest) and move `latest`: last, atomically. Artifacts: counts by
   category, a sample of prompts, sanitizer and leak-scan results, the run report with cost.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from runtime.artifacts import set_aside_table, summary_table
from runtime.interrupt import prompt_exit_on_sigterm, stop_here_if_interrupted
from runtime.outcomes import reject
from runtime.recovery import hand_off_if_over_budget
from runtime.report import run_report
from runtime.results import result_storage
from spotline.embedding.local import available_cpus
from spotline.errors import brief
from spotline.personas import synthesis as syn
from spotline.resources import get_resources
from spotline.settings import get_settings
from tasks import personas as t

_DATE_IN_KEY = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")
READY_MARKER = "_SUCCESS"


@flow(
    name="personas",
    description="Sanitize yesterday's export, synthesize personas and tricky prompts, publish a versioned suite.",
    persist_result=True,
    result_storage=result_storage(get_settings()),
)
def personas(day: str | None = None, export_key: str | None = None) -> dict[str, Any]:
    """Build the suite for `day` (YYYY-MM-DD; default yesterday), or for the export `export_key` belongs to."""
    res = get_resources()
    settings, cfg = res.settings, res.settings.personas
    day, waiting = _which_day(day, export_key, cfg.timezone)
    if waiting:
        get_run_logger().info(waiting)
        return {"status": "waiting", "reason": waiting}
    if day is None:
        return reject("personas-rejected", f"bad request: {export_key!r} is not under a date=YYYY-MM-DD/ partition")
    if moved := hand_off_if_over_budget(settings.prefect.interruption_budget):
        return moved  # interrupted too often on Spot: the on-demand pool finishes it

    with prompt_exit_on_sigterm(res.release), run_report("personas", settings.prices, ledger=res.gateway.ledger,
                                                         vcpus=available_cpus()) as report:
        raw, snapshot = t.sanitize_export(day)
        _report_input(raw, snapshot)
        groups = t.find_groups(snapshot.users, snapshot.logs, cfg.groups, cfg.seed, cfg.context_chunks)
        snapshot.scanner.check("before generation", _card_inputs(groups))
        written = []
        for group in groups:
            stop_here_if_interrupted()  # after SIGTERM no new group starts: the rescheduled run does it
            written.append(t.write_personas(group, raw.snapshot_hash, cfg.cards_per_group, cfg.seed,
                                            cfg.card_temperature))
        cards, prompts, dropped = t.build_suite(written, cfg.seed, cfg.min_prompt_chars, cfg.duplicate_cosine)
        skipped = sum((Counter(w["skipped"]) for w in written), Counter())
        counts = _quality_report(prompts, dropped, skipped, cfg.min_per_category)
        snapshot.scanner.check("after generation", _published(cards, prompts))
        manifest = _publish(day, raw, snapshot, groups, cards, prompts, counts, dropped, skipped, report)
    get_run_logger().info("dropped: %s", dropped)
    return {"status": "published", "day": day, "version": manifest.version, "personas": len(cards),
            "prompts": len(prompts), "content_hash": manifest.content_hash, "by_category": counts}


def _which_day(day: str | None, export_key: str | None, tz: str) -> tuple[str | None, str | None]:
    """(day, None) to run; (None, why) to wait for the rest of the export; (None, None) for a bad key."""
    if export_key:
        if not export_key.endswith("/" + READY_MARKER):
            return None, f"{export_key} landed; waiting for the export's {READY_MARKER} marker"
        found = _DATE_IN_KEY.search("/" + export_key)
        return (found.group(1) if found else None), None
    if day:
        return date.fromisoformat(day).isoformat(), None
    return (datetime.now(ZoneInfo(tz)).date() - timedelta(days=1)).isoformat(), None


def _report_input(raw, snapshot) -> None:
    log = get_run_logger()
    log.info("export %s: %d users, %d log rows read; %d set aside; snapshot %s", raw.day, raw.rows_read["users"],
             raw.rows_read["logs"], len(raw.set_aside), raw.snapshot_hash[:12])
    set_aside_table("personas-set-aside", [s.as_dict() for s in raw.set_aside], "export rows")
    stats = snapshot.stats
    rows = [{"what": "log texts scrubbed", "count": stats.texts}, {"what": "texts changed", "count": stats.texts_changed},
            {"what": "known values (users table)", "count": snapshot.known_values},
            {"what": "values found by recognizers", "count": snapshot.found_values}]
    rows += [{"what": f"redacted {entity}", "count": n} for entity, n in sorted(stats.by_entity.items())]
    rows += [{"what": "leak scan after scrubbing", "count": "0 hits: passed"}]
    summary_table("personas-sanitizer", rows, "Sanitization before any model call: what was redacted (counts only)")


def _card_inputs(groups: list[syn.Group]):
    for g in groups:
        for i, variables in enumerate(syn.card_variables(g, get_settings().personas.cards_per_group)):
            for name, value in variables.items():
                yield f"{g.id}/{i}", name, str(value)


def _published(cards: list[dict[str, Any]], prompts: list[dict[str, Any]]):
    for c in cards:
        for name, value in c.items():
            yield c["persona_id"], name, " ".join(value) if isinstance(value, list) else str(value)
    for n, p in enumerate(prompts):
        yield f"prompt {n} ({p['persona_id']})", "text", p["text"]


def _quality_report(prompts, dropped: dict[str, int], skipped: Counter, minimum: int) -> dict[str, int]:
    """The categories table (written before the coverage check, so a thin suite still shows it)."""
    by_category = Counter(p["category"] for p in prompts)
    rows = [{"category": c, "prompts": by_category[c], "minimum": minimum, "ok": by_category[c] >= minimum}
            for c in syn.CATEGORIES]
    rows += [{"category": f"dropped: {why}", "prompts": n, "minimum": "", "ok": ""} for why, n in sorted(dropped.items())]
    rows += [{"category": f"cards skipped: {why}", "prompts": n, "minimum": "", "ok": ""} for why, n in sorted(skipped.items())]
    summary_table("personas-categories", rows, f"{len(prompts)} prompts by category; what the quality filter dropped")
    return syn.coverage((p["category"] for p in prompts), minimum)


def _publish(day, raw, snapshot, groups, cards, prompts, counts, dropped, skipped, report):
    res = get_resources()
    by_origin = Counter(p["origin"].split(":", 1)[0] for p in prompts)
    llm = res.gateway.ledger.summary(report.scope)
    extra = {
        "snapshot_hash": raw.snapshot_hash, "sources": raw.sources, "rows_read": raw.rows_read,
        "set_aside": raw.set_aside_counts(), "groups": len(groups),
        "by_category": counts, "by_origin": dict(by_origin), "dropped": dropped, "cards_skipped": dict(skipped),
        "models": sorted({r["model"] for r in llm}),
        "prompt_versions": {"persona_card": res.gateway.prompts.get("persona_card").version},
        "sanitizer": {"texts": snapshot.stats.texts, "texts_changed": snapshot.stats.texts_changed,
                      "by_entity": snapshot.stats.by_entity, "known_values": snapshot.known_values,
                      "found_values": snapshot.found_values},
        "leak_scan": {"after_scrubbing": "passed", "before_generation": "passed", "after_generation": "passed"},
        "cost_usd": round(sum(r["cost_usd"] or 0.0 for r in llm), 6),
        "seed": res.settings.personas.seed,
    }
    manifest = res.datasets.publish(
        res.settings.personas.dataset, day,
        {"personas": [pd.DataFrame(cards)], "prompts": [pd.DataFrame(prompts)]},
        producer=f"flow personas, run {flow_run.id}", extra=extra, fmt="jsonl",
    )
    sample = []
    for category in syn.CATEGORIES:
        sample += [{"category": category, "origin": p["origin"], "prompt": brief(p["text"], 160)}
                   for p in [p for p in prompts if p["category"] == category][:2]]
    summary_table("personas-sample", sample, f"Two prompts per category of {res.settings.personas.dataset} {day}")
    get_run_logger().info("published %s version %s: %d personas, %d prompts (content %s)", manifest.name,
                          manifest.version, len(cards), len(prompts), manifest.content_hash[:12])
    return manifest


if __name__ == "__main__":
    print(personas())
