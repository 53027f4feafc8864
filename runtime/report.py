"""One run report for every flow: what the run cost and what it survived.

Every flow opens ``with run_report(...) as report:`` around its story. At the end (also when
the run fails) the report publishes one table artifact, ``<flow>-run-report``:

- LLM tokens and $ by model, from the gateway's ledger rows *scoped to this flow run*
  (spotline.usage: a process may run several flow runs, so "rows since I started" is wrong);
- cache hits and what they saved (LLM response cache; embedding cache for ingestion);
- embedding tokens and $, and the same tokens priced on the reference model;
- compute seconds priced on Fargate Spot (wall time of this attempt x the task's vCPUs);
- interruptions survived and the seconds of work lost at each (time from the last persisted
  task result to the interruption), read from the flow run's own state history.
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from runtime.recovery import Interruption, interruptions
from spotline.costs import compute_cost, embedding_cost, usd
from spotline.llm.gateway import UsageLedger
from spotline.settings import PriceSettings
from spotline.usage import usage_scope


@dataclass
class EmbeddingTally:
    tokens: int = 0
    texts: int = 0
    cache_hits: int = 0


@dataclass
class RunReport:
    flow: str
    scope: str
    prices: PriceSettings
    vcpus: float = 1.0
    ledger: UsageLedger | None = None
    started: float = field(default_factory=time.perf_counter)
    embeddings: dict[str, EmbeddingTally] = field(default_factory=dict)
    interruptions: list[Interruption] = field(default_factory=list)

    def add_embeddings(self, model: str, tokens: int, texts: int, cache_hits: int = 0) -> None:
        t = self.embeddings.setdefault(model, EmbeddingTally())
        t.tokens += tokens
        t.texts += texts
        t.cache_hits += cache_hits

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []

        def row(item: str, quantity: Any, cost: float | None | str = "") -> None:
            rows.append({"item": item, "quantity": quantity, "usd": cost if isinstance(cost, str) else usd(cost)})

        llm = self.ledger.summary(self.scope) if self.ledger else []
        for r in llm:
            row(f"LLM {r['model']} ({r['provider']})",
                f"{r['calls']} calls, {r['input_tokens']} in / {r['output_tokens']} out tokens, errors: {r['errors']}",
                r["cost_usd"])
        if llm:
            row("LLM response cache", f"{sum(r['cache_hits'] for r in llm)} hits",
                f"saved {usd(sum(r['saved_usd'] for r in llm))}")
        for model, t in sorted(self.embeddings.items()):
            row(f"embeddings {model}", f"{t.tokens} tokens, {t.texts} texts", embedding_cost(self.prices, model, t.tokens))
            reference = self.prices.reference_embedding_model
            if reference != model.split("@", 1)[0]:
                row(f"same tokens on {reference}", f"{t.tokens} tokens", embedding_cost(self.prices, reference, t.tokens))
            # Saved ~ hits x average tokens per embedded text on the reference price: cached texts
            # are not re-tokenised, so their exact count is not known.
            per_text = t.tokens / t.texts if t.texts else 0.0
            saved = embedding_cost(self.prices, reference, int(t.cache_hits * per_text))
            row("embedding cache", f"{t.cache_hits} chunks reused", f"saved ~{usd(saved)} on {reference}")
        seconds = self.seconds
        row("compute (this attempt)", f"{seconds:.1f} s x {self.vcpus:g} vCPU on Fargate Spot",
            compute_cost(self.prices, seconds, self.vcpus))
        lost = [i.work_lost_s for i in self.interruptions]
        row("interruptions survived", len(self.interruptions),
            f"work lost {sum(lost):.1f} s (max {max(lost):.1f} s)" if lost else "none")
        return rows

    def publish(self) -> None:
        self.interruptions = interruptions_of_this_run()
        rows = self.rows()
        create_table_artifact(key=f"{self.flow}-run-report", table=rows,
                              description=f"Run report: cost by model, cache savings, compute, interruptions")
        get_run_logger().info("run report: %s", "; ".join(f"{r['item']}: {r['quantity']} {r['usd']}".strip() for r in rows))


@contextmanager
def run_report(flow: str, prices: PriceSettings, ledger: UsageLedger | None = None,
               vcpus: float = 1.0) -> Iterator[RunReport]:
    """Scope model usage to this flow run and publish the report when the run ends, however it ends."""
    scope = str(flow_run.id or uuid.uuid4())
    report = RunReport(flow=flow, scope=scope, prices=prices, vcpus=vcpus, ledger=ledger)
    with usage_scope(scope):
        try:
            yield report
        finally:
            try:
                report.publish()
            except Exception as exc:  # the report must never turn a finished run into a failed one
                get_run_logger().warning("run report not published: %s", exc)


def interruptions_of_this_run() -> list[Interruption]:
    """Each time this flow run stopped without finishing and came back (runtime.recovery)."""
    run_id = flow_run.id
    if not run_id:
        return []
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return interruptions(client, uuid.UUID(run_id))
