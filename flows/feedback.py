"""Feedback intake: drain the queue into the scrubbed feedback dataset; say when there is enough to train.

The story of a run:
1. Drain the queue (SQS in aws, the local SQLite spool otherwise) in batches: each message is
   validated (a malformed one goes to the dead-letter destination with its reason), de-duplicated
   by id, scrubbed of PII (fail closed: a scrub error stores nothing), and appended to its UTC
   day's partition of the feedback dataset. Messages are deleted only after their batch is written.
2. Count the corrections stored since the last training set was built.
3. Emit `spotline.feedback.received` with the counts, and, at `feedback.min_corrections` or more,
   `spotline.feedback.threshold_reached`: the fine-tune deployment's trigger.
Artifacts: what was stored, what was dead-lettered and why (counts only: the texts are user data).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event

from runtime.artifacts import summary_table
from spotline.resources import get_resources
from tasks import feedback as t


@flow(name="feedback-intake", description="Drain feedback into the scrubbed dataset; emit the fine-tune trigger at the threshold.")
def feedback_intake(max_batches: int | None = None) -> dict[str, Any]:
    cfg = get_resources().settings.feedback
    stats = t.drain_feedback(max_batches)
    new, since = t.count_new_corrections()
    _report(stats, new, since, cfg.min_corrections)
    counts = {k: stats[k] for k in ("received", "stored", "duplicates", "dead_lettered", "corrections",
                                    "complaints", "praise")}
    resource = {"prefect.resource.id": f"spotline.feedback.{cfg.dataset}"}
    emit_event("spotline.feedback.received", resource=resource,
               payload={**counts, "new_corrections": new, "threshold": cfg.min_corrections})
    if new >= cfg.min_corrections:
        emit_event("spotline.feedback.threshold_reached", resource=resource,
                   payload={"new_corrections": new, "since": since, "threshold": cfg.min_corrections})
        get_run_logger().info("%d new corrections since %s: threshold %d reached, fine-tune triggered", new,
                              since or "the beginning", cfg.min_corrections)
    return {**counts, "reasons": stats["reasons"], "new_corrections": new, "triggered": new >= cfg.min_corrections}


def _report(stats: dict[str, Any], new: int, since: str | None, threshold: int) -> None:
    rows = [{"what": k.replace("_", " "), "count": stats[k]} for k in
            ("received", "stored", "duplicates", "dead_lettered", "corrections", "complaints", "praise", "batches")]
    rows += [{"what": f"dead-lettered: {why}", "count": n} for why, n in sorted(stats["reasons"].items())]
    rows += [{"what": f"redacted {entity}", "count": n} for entity, n in sorted(stats.get("redacted", {}).items())]
    rows.append({"what": f"corrections since the last training set ({since or 'never trained'})",
                 "count": f"{new} (threshold {threshold})"})
    summary_table("feedback-intake", rows, "Feedback intake: counts only (the texts are user data)")


if __name__ == "__main__":
    print(feedback_intake())
