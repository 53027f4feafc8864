"""The persona suite's units of work. Raw production data never leaves the first one.

`sanitize_export` reads the export and returns only its sanitized form: its result is never
persisted (the scanner inside it holds the snapshot's PII values, in memory only), so a resumed
run sanitizes again: seconds to a minute. Everything after it is free of PII and persisted, so a
resumed run takes finished groups from the results instead of asking the model again.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from runtime.retry import retry_policy
from spotline.llm.types import LLMCallFailed
from spotline.personas import export as ex
from spotline.personas import synthesis as syn
from spotline.personas.sanitize import ColumnPolicy, Pseudonymizer, Snapshot, sanitize_snapshot
from spotline.resources import get_resources

RETRY = retry_policy()


@task(name="sanitize-export", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def sanitize_export(day: str) -> tuple[ex.RawExport, Snapshot]:
    """Read one day's export and sanitize it; the raw frames are dropped before anything returns."""
    from datetime import date

    res = get_resources()
    cfg = res.settings.personas
    if cfg.sql_url:
        raw = ex.read_sql(res.secrets.get(cfg.sql_url).get_secret_value(), date.fromisoformat(day),
                          cfg.max_message_chars, cfg.users_table, cfg.logs_table)
    else:
        raw = ex.read_files(res.store, cfg.export_prefix, date.fromisoformat(day), cfg.max_message_chars)
    policy = ColumnPolicy(user_pass=tuple(cfg.user_pass_columns), log_pass=tuple(cfg.log_pass_columns),
                          quasi=tuple(cfg.quasi_columns))
    key = res.secrets.get(cfg.pseudonym_key).get_secret_value()
    snapshot = sanitize_snapshot(raw.users, raw.logs, policy, Pseudonymizer(key), cfg.phone_regions)
    raw.users = raw.users.iloc[0:0]  # what returns keeps counts and the hash, not the rows
    raw.logs = raw.logs.iloc[0:0]
    return raw, snapshot


@task(name="find-groups", persist_result=True, **RETRY)
def find_groups(users: Any, logs: Any, groups: int, seed: int, context_chunks: int) -> list[syn.Group]:
    """Cluster users by what they asked (sanitized text only), then retrieve each group's context."""
    res = get_resources()
    per_user = logs.groupby("user")["text"].apply(list)
    activity_users = sorted(per_user.index)
    vectors = res.embedder.embed([syn.activity_text(per_user[u]) for u in activity_users]).vectors
    found = syn.group_users(users, logs, vectors, activity_users, groups, seed)
    spec = res.embedder_spec
    res.index.ensure(spec.model_id, spec.dimension)
    for g in found:
        hits = res.index.search(g.centre, context_chunks) if res.index.count() else []
        g.area = syn.area_of(hits)
        g.context = [{"title": h.title, "source": h.source_uri, "score": f"{h.score:.3f}"} for h in hits]
    return found


@task(name="write-personas", task_run_name="write-personas-{group.id}", persist_result=True, **RETRY)
def write_personas(group: syn.Group, snapshot_hash: str, cards: int, seed: int, temperature: float) -> dict[str, Any]:
    """Persona cards for one group through the gateway's generator route; a card the model cannot
    produce as valid JSON after the gateway's repairs and fallbacks is skipped, with its reason."""
    gateway = get_resources().gateway
    made, skipped = [], Counter()
    for i, variables in enumerate(syn.card_variables(group, cards)):
        try:
            # Seeded per group and card, and cached even when sampled: a re-run gets the same cards.
            result = gateway.call("generator", prompt="persona_card", variables=variables, temperature=temperature,
                                  seed=seed * 1000 + int(group.id[1:]) * 10 + i, cache=True)
        except LLMCallFailed as exc:
            skipped["schema-invalid after retries" if "schema" in str(exc).lower() else "model call failed"] += 1
            continue
        persona = syn.card(result.data, group, i, snapshot_hash, result.usage.model, result.usage.prompt_version)
        made.append({"persona": persona, "base": result.data["first_message"], "model": result.usage.model})
    return {"group": group.id, "made": made, "skipped": dict(skipped)}


@task(name="build-suite", persist_result=True, **RETRY)
def build_suite(written: list[dict[str, Any]], seed: int, min_chars: int, duplicate_cosine: float,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Model prompts plus strategy prompts, through the quality filter; returns personas, prompts, drops.

    A persona whose own first message fails the checks (empty, a loop, a copy of the prompt's
    example) is dropped whole: strategies built on a bad base would only multiply it."""
    res = get_resources()
    rng = random.Random(seed)
    dropped: Counter = Counter()
    examples = [e.output["first_message"] for e in res.gateway.prompts.get("persona_card").examples]
    made = [item for w in written for item in w["made"]]
    bases = [" ".join(str(item["base"]).split()) for item in made]
    vectors = res.embedder.embed(examples + bases).vectors if bases else None
    personas, prompts = [], []
    for n, (item, base) in enumerate(zip(made, bases)):
        p = item["persona"]
        first = syn.Prompt(p["persona_id"], p["group"], "normal", base, [base], p["origin"])
        why = syn.check(first, min_chars)
        if why is None and syn.copied(vectors[len(examples) + n], vectors[:len(examples)], duplicate_cosine):
            why = "copied the prompt's example"
        if why:
            dropped[f"persona: {why}"] += 1
            continue
        personas.append(p)
        prompts.append(first)
        prompts.extend(syn.expand(base, p, rng))
    vectors = res.embedder.embed([p.text for p in prompts]).vectors if prompts else []
    kept, more = syn.quality_filter(prompts, vectors, min_chars, duplicate_cosine)
    dropped.update(more)
    kept_ids = {p.persona_id for p in kept}
    return [p for p in personas if p["persona_id"] in kept_ids], [p.as_dict() for p in kept], dict(dropped)
