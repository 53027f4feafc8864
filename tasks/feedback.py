"""Feedback intake's unit of work: drain the queue into the feedback dataset.

One task, not a task per batch: a batch is a few hundred small rows and seconds of work, and a
batch that fails is simply received again (its messages are not deleted), so Prefect has
nothing to resume that the queue does not already keep. Not cached by inputs, and the result is
counts only (never text): every run drains whatever is queued at that moment.

Retries follow runtime.retry: SQS throttling, a busy intake lease (IntakeBusy) or a store
hiccup are retried; a sanitizer failure (ScrubFailed, LeakFound) or a misconfigured queue is
permanent for this run, and the batch's messages wait in the queue for a fixed code or config.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from runtime.retry import retry_policy
from spotline.finetune.intake import Scrubber, drain
from spotline.finetune.queues import open_queue
from spotline.resources import get_resources

RETRY = retry_policy()


@task(name="drain-feedback", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def drain_feedback(max_batches: int | None = None, wait_s: float = 0) -> dict[str, Any]:
    """Everything queued, or `max_batches` batches of ``feedback.batch_size``; returns IntakeStats as a dict."""
    res = get_resources()
    cfg = res.settings.feedback
    queue = open_queue(cfg, res.settings.profile, res.settings.home)
    key = res.secrets.get(cfg.pseudonym_key or res.settings.personas.pseudonym_key).get_secret_value()
    scrubber = Scrubber.build(key, res.settings.personas.phone_regions)
    stats = drain(queue, res.datasets, scrubber, cfg.dataset, batch_size=cfg.batch_size, max_batches=max_batches,
                  visibility_s=cfg.visibility_s, wait_s=wait_s)
    return stats.as_dict()


@task(name="count-new-corrections", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def count_new_corrections() -> tuple[int, str | None]:
    """Corrections stored since the last training set was built (and when that was: None = never)."""
    from spotline.finetune.intake import corrections_since
    from spotline.finetune.run import trained_through

    res = get_resources()
    since = trained_through(res.datasets, res.settings.finetune.dataset)
    return corrections_since(res.datasets, res.settings.feedback.dataset, since), since.isoformat() if since else None
