"""Staging swarm and release gate: fire the persona suite at staging, grade every answer, decide.

The story of a run:
1. Pick the suite: the persona dataset version asked for (default `latest`; the committed
   fallback suite until one exists) and the tier: `smoke` is a seeded sample spread over the
   categories, `full` is everything; `auto` is `full` for main and `smoke` for other branches.
2. Decide whether the judge gates: only a route calibrated at or above the floor does; otherwise
   its verdicts are advisory (shown, not counted).
3. Split the prompts into shards, write each shard's prompts to the object store and run every
   shard as its own flow run of `swarm-shard` (its own Fargate Spot task in aws; in-process when
   not deployed). A shard fires its prompts with adaptive concurrency, then grades them: checks
   first, the judge on what they passed. Both steps persist as they go and resume from there.
4. Read every shard's grades and load figures, and decide: pass, fail or inconclusive, with the
   failure rate's confidence interval. Artifacts: outcomes by category, failure categories, load
   (latency percentiles, throughput, throttling), the worst answers with reasons, the run report
   with cost; every failure as JSONL in the object store, with a `false_positive` field for a
   reviewer. Fail: the run ends Failed naming the top failure categories. Inconclusive: the run
   ends in a Failed state named Inconclusive.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from runtime.artifacts import set_aside_table, summary_table
from runtime.fanout import fan_out
from runtime.interrupt import prompt_exit_on_sigterm
from runtime.outcomes import reject
from runtime.recovery import hand_off_if_over_budget
from runtime.report import run_report
from spotline.errors import PermanentError, brief
from spotline.resources import get_resources
from spotline.settings import TargetSpec
from spotline.swarm import judge as jd
from spotline.swarm.gate import GATE_FAIL, GATE_INCONCLUSIVE, Decision, decide
from spotline.swarm.grading import FAIL, INCONCLUSIVE, PASS, UNANSWERED, Grade, target_secrets
from spotline.swarm.progress import ShardProgress
from spotline.swarm.suite import SuiteItem, choose, shards, tier_for
from spotline.swarm.targets import refusal
from spotline.textmatch import leaks
from tasks import swarm as t

SHARD_DEPLOYMENT = "swarm-shard/swarm-shard"
WITHHELD = "[withheld: the answer carries the canary or the system prompt]"
INCONCLUSIVE_STATE = "Inconclusive"


class ReleaseGateFailed(PermanentError):
    """Too many answers failed: the release is blocked (re-running the same build gives the same verdict)."""


@flow(name="swarm-shard", description="One shard of a swarm: fire its prompts at the target, grade the answers.")
def swarm_shard(run_key: str, shard: int, target: dict[str, Any], concurrency: int, timeout_s: float,
                max_attempts: int, max_duration_s: float, latency_slo_s: float, judge_use: str,
                judge_gating: bool) -> dict[str, Any]:
    res = get_resources()
    progress = ShardProgress(res.store, res.settings.layout.swarm_run(run_key), shard)
    key = f"shard-{shard:03d}"
    with prompt_exit_on_sigterm(res.release):
        load = t.fire_prompts(key, progress, TargetSpec.model_validate(target), concurrency, timeout_s,
                              max_attempts, max_duration_s)
        graded = t.grade_answers(key, progress, latency_slo_s, judge_use, judge_gating)
    return {"shard": shard, **load, **graded}


@flow(name="swarm", description="Fire the persona suite at staging, grade every answer, pass/fail/inconclusive gate.")
def swarm(target: dict[str, Any] | None = None, target_url: str | None = None, version: str = "latest", tier: str = "auto",
          branch: str | None = None, concurrency: int | None = None, threshold: float | None = None,
          judge_use: str | None = None, smoke_size: int | None = None, shard_size: int | None = None,
          latency_slo_s: float | None = None) -> dict[str, Any]:
    res = get_resources()
    cfg = res.settings.swarm
    spec = TargetSpec.model_validate(target) if target else cfg.target
    if target_url is not None:  # an event names only the URL; the rest of the contract comes from settings
        spec = spec.model_copy(update={"url": target_url})
    if why_not := refusal(spec.url, cfg.target.url, cfg.allowed_hosts):
        return reject("swarm-rejected", f"bad request: {why_not}")
    judge_use = judge_use or cfg.judge_use
    threshold = cfg.threshold if threshold is None else threshold
    latency_slo_s = latency_slo_s or cfg.latency_slo_s
    tier = tier_for(tier, branch or None)
    if moved := hand_off_if_over_budget(res.settings.prefect.interruption_budget):
        return moved
    log = get_run_logger()
    with run_report("swarm", res.settings.prices, ledger=res.gateway.ledger):
        run_key = _run_key()
        planned = _planned(run_key)
        if planned is None:
            suite = t.load_suite(version)
            items = choose(suite.items, tier, smoke_size or cfg.smoke_size, cfg.seed)
            source = suite.source
            set_aside_table("swarm-suite-set-aside", suite.set_aside, "suite rows")
        else:  # a resumed run fires the prompts it chose the first time, whatever was published since
            source, items = planned
        gating, why = _judge_gating(judge_use)
        log.info("%s: %d prompts (%s), target %s; %s", source, len(items), tier, _where(spec.url), why)
        pieces = _plan(run_key, source, items, shard_size or cfg.shard_size, spec, concurrency or cfg.concurrency,
                       latency_slo_s, judge_use, gating)
        # A crashed shard is waited for while recovery can still bring it back: the grace before
        # the sweep acts, one sweep period, and a margin for the new attempt to start.
        patience = res.settings.prefect.recovery_grace_s + 360
        outcomes = fan_out(SHARD_DEPLOYMENT, pieces, swarm_shard, patience_s=patience, key=run_key)
        grades, loads, exchanges = _collect(run_key, len(pieces))
        for item in items:  # a prompt a failed shard never finished is unanswered, not lost
            grades.setdefault(item.id, Grade(item.id, item.category, UNANSWERED, reason="its shard did not finish"))
        decision = decide(grades.values(), threshold, cfg.inconclusive_budget)
        failures_key = _report(run_key, source, tier, items, grades, exchanges, loads, decision, why, outcomes)
    result = {"gate": decision.outcome, "message": decision.message, "suite": source, "tier": tier,
              "prompts": len(items), "failure_rate": decision.failure_rate, "interval": list(decision.interval),
              "judge": why, "judge_gating": gating, "failures": failures_key,
              "by_outcome": {"pass": decision.passed, "fail": decision.failed,
                             "inconclusive": decision.inconclusive, "unanswered": decision.unanswered},
              "top_failures": decision.top_failures}
    if decision.outcome == GATE_FAIL:
        raise ReleaseGateFailed(decision.message)
    if decision.outcome == GATE_INCONCLUSIVE:
        return Failed(name=INCONCLUSIVE_STATE, message=decision.message, data=result)
    log.info(decision.message)
    return result


def _judge_gating(use: str) -> tuple[bool, str]:
    res = get_resources()
    if use == "none":
        return jd.gating(res.store, res.settings.layout.judge_calibrations, use, "", 0.0)
    models = ",".join(m.model_id for _, m in res.gateway.chain(use))
    return jd.gating(res.store, res.settings.layout.judge_calibrations, use, models, res.settings.swarm.judge_floor_kappa)


def _run_key() -> str:
    """The run's name in the store: its flow run id, or, for a run the recovery moved to the
    on-demand pool (tag ``resumes:<id>``), the id of the run it continues, so its shards are found."""
    tags = list(flow_run.tags or [])
    resumed = [t.split(":", 1)[1] for t in tags if t.startswith("resumes:")]
    return resumed[0] if resumed else str(flow_run.id or "local")


def _planned(run_key: str) -> tuple[str, list[SuiteItem]] | None:
    """The suite and prompts a previous attempt of this run chose (plan.json, then each shard's items)."""
    res = get_resources()
    key = res.settings.layout.swarm_run(run_key) + "plan.json"
    if res.store.head(key) is None:
        return None
    plan = json.loads(res.store.get(key))
    items = []
    for n in range(plan["shards"]):
        items += ShardProgress(res.store, res.settings.layout.swarm_run(run_key), n).items()
    return plan["source"], items


def _where(url: str) -> str:
    """A URL for the log: no credentials, no query string."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _plan(run_key: str, source: str, items: list[SuiteItem], size: int, spec: TargetSpec, concurrency: int,
          latency_slo_s: float, judge_use: str, gating: bool) -> dict[str, dict[str, Any]]:
    """Write each shard's prompts once, then plan.json (last: a resumed run trusts it), and return
    each shard's parameters."""
    res = get_resources()
    cfg = res.settings.swarm
    prefix = res.settings.layout.swarm_run(run_key)
    pieces = {}
    chunks = shards(items, size)
    for n, chunk in enumerate(chunks):
        progress = ShardProgress(res.store, prefix, n)
        if res.store.head(progress.prefix + "items.jsonl") is None:
            progress.write_items(chunk)
        pieces[f"shard-{n:03d}"] = dict(
            run_key=run_key, shard=n, target=spec.model_dump(), concurrency=concurrency, timeout_s=cfg.timeout_s,
            max_attempts=cfg.max_attempts, max_duration_s=cfg.max_duration_s, latency_slo_s=latency_slo_s,
            judge_use=judge_use, judge_gating=gating)
    if res.store.head(prefix + "plan.json") is None:
        res.store.put(prefix + "plan.json", json.dumps({"source": source, "shards": len(chunks),
                                                        "prompts": len(items)}).encode(), "application/json")
    return pieces


def _collect(run_key: str, n: int):
    res = get_resources()
    grades: dict[str, Grade] = {}
    exchanges = {}
    loads = []
    for shard in range(n):
        p = ShardProgress(res.store, res.settings.layout.swarm_run(run_key), shard)
        grades.update(p.grades())
        exchanges.update(p.exchanges())
        if (s := p.stats()) is not None:
            loads.append(s)
    return grades, loads, exchanges


def _report(run_key, source, tier, items, grades, exchanges, loads, d: Decision, why, outcomes) -> str:
    res = get_resources()
    by_id = {i.id: i for i in items}
    secrets = target_secrets(res.settings.swarm, lambda ref: res.secrets.get(ref).get_secret_value())

    def shown(answer: str | None) -> str | None:
        """An answer as artifacts and failures.jsonl may show it: never one that carries a secret."""
        return WITHHELD if answer is not None and leaks(answer, secrets) else answer

    rows = []
    for category in sorted({i.category for i in items}):
        mine = Counter(g.outcome for g in grades.values() if g.category == category)
        rows.append({"category": category, "pass": mine[PASS], "fail": mine[FAIL],
                     "inconclusive": mine[INCONCLUSIVE], "unanswered": mine[UNANSWERED]})
    summary_table("swarm-outcomes", rows, f"{d.outcome.upper()}: {d.message}")
    summary_table("swarm-failure-categories", [{"failure": f, "answers": n} for f, n in d.top_failures]
                  or [{"failure": "none", "answers": 0}], "Why answers failed (an answer can fail several checks)")
    answered = [e for e in exchanges.values() if e.error is None]
    lat = np.array([e.latency_s for e in answered]) if answered else np.array([0.0])
    wall = sum(s.get("wall_s", 0.0) for s in loads) or 1e-9
    load_rows = [
        {"measure": "latency p50 / p95 / p99 (s)",
         "value": " / ".join(f"{np.percentile(lat, q):.2f}" for q in (50, 95, 99))},
        {"measure": "throughput (answers/s, per shard wall time)", "value": round(len(answered) / wall, 2)},
        {"measure": "target errors (throttled, 5xx, connection)",
         "value": sum(1 for e in exchanges.values() if e.load_error)},
        {"measure": "429/503 answers absorbed by retries", "value": sum(e.throttled for e in exchanges.values())},
        {"measure": "peak requests in flight / bound",
         "value": f"{max((s.get('peak_in_flight', 0) for s in loads), default=0)} / "
                  f"{max((s.get('bound', 0) for s in loads), default=0)}"},
        {"measure": "lowest adaptive limit", "value": min((s.get("lowest_limit", 0) for s in loads), default=0)},
        {"measure": "shards (state)", "value": ", ".join(f"{o.key}: {o.state}" for o in outcomes)},
    ]
    summary_table("swarm-load", load_rows, "Load results, reported apart from quality")
    failed = [g for g in grades.values() if g.outcome in (FAIL, INCONCLUSIVE)]
    worst = sorted(failed, key=lambda g: (g.outcome != FAIL, -len(g.failures), g.category))[:10]
    summary_table("swarm-worst", [{"category": g.category, "outcome": g.outcome, "failures": ", ".join(g.failures),
                                   "reason": brief(g.reason, 160),
                                   "prompt": brief(by_id[g.id].text if g.id in by_id else "", 120),
                                   "answer": brief(shown(exchanges[g.id].answer) or "" if g.id in exchanges else "", 160)}
                                  for g in worst] or [{"category": "none"}], "The worst answers, with reasons")
    key = f"{res.settings.layout.swarm_run(run_key)}failures.jsonl"
    lines = []
    for g in failed:
        ex = exchanges.get(g.id)
        item = by_id.get(g.id)
        lines.append(json.dumps({**g.as_dict(), "prompt": item.text if item else "", "turns": list(item.turns) if item else [],
                                 "answer": shown(ex.answer) if ex else None, "context": ex.context if ex else [],
                                 "latency_s": ex.latency_s if ex else None, "false_positive": None},
                                ensure_ascii=False))
    res.store.put(key, ("\n".join(lines) + ("\n" if lines else "")).encode(), "application/x-ndjson")
    create_markdown_artifact(key="swarm-gate", description=f"release gate: {d.outcome}", markdown=(
        f"## Release gate: **{d.outcome.upper()}**\n\n{d.message}\n\n"
        f"- suite: {source}, tier {tier}, {len(items)} prompts\n- judge: {why}\n"
        f"- pass {d.passed}, fail {d.failed}, inconclusive {d.inconclusive}, unanswered {d.unanswered}\n"
        f"- failures for review: `{res.store.uri(key)}` (set `false_positive` to true on a wrong failure; "
        f"reviewed rows feed the judge calibration set)\n"))
    return key


if __name__ == "__main__":
    print(swarm())
