"""Uploads become searchable: drain the object events a burst produced, in as few runs as possible.

The story of a run:
1. The deployment's trigger fired on the first `spotline.object.*` event of a window: at most one
   run per window however many objects arrive (500 uploads in a minute start one or two runs).
2. Read the drain watermark and gather every object event the server stored since, including
   the ones the trigger did not fire for. Bring those keys up to date in one `ingest-documents`
   subflow run: new and changed objects are ingested, vanished ones removed; unchanged ones cost
   nothing, so a redelivered event is harmless.
3. Repeat until no new event arrived and the trigger's window has closed: a change after that
   starts a run of its own, so none falls between two runs.
4. Move the watermark past what was drained and report rounds, events and keys.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client

from flows.ingest import ingest
from runtime.artifacts import summary_table
from runtime.drain import Watermark, pending_keys
from spotline.ingestion.requests import MAX_KEYS_PER_RUN
from spotline.resources import get_resources


@flow(name="ingest-on-upload", description="Drain object events into the index: one run per burst, none missed.")
def ingest_on_upload(window_started: str | None = None, window_s: float = 30.0) -> dict[str, Any]:
    """`window_started`: when the triggering event occurred; `window_s`: the trigger's window."""
    log = get_run_logger()
    res = get_resources()
    settings = res.settings
    mark_key = settings.layout.drain_watermark(res.index.name)
    started = _parse(window_started) or datetime.now(timezone.utc)
    closes = started + timedelta(seconds=window_s + 2)  # the trigger fires again for events after this
    rounds: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        mark = Watermark.load(res.store, mark_key, res.index.name, default=started - timedelta(seconds=window_s))
        while True:
            keys, events, advanced = pending_keys(client, mark, settings.store.bucket)
            if keys:
                for i in range(0, len(keys), MAX_KEYS_PER_RUN):  # a huge burst: several subflow runs
                    summary = ingest(keys=keys[i : i + MAX_KEYS_PER_RUN])
                    rounds.append({"round": len(rounds) + 1, "events": events, "keys": len(keys[i : i + MAX_KEYS_PER_RUN]),
                                   "new": summary.new, "changed": summary.changed, "deleted": summary.deleted,
                                   "unchanged": summary.unchanged, "failed": summary.failed,
                                   "chunks_embedded": summary.chunks_embedded})
                advanced.save(res.store, mark_key)
                mark = advanced
                continue
            if datetime.now(timezone.utc) >= closes:
                break
            time.sleep(min(2.0, max((closes - datetime.now(timezone.utc)).total_seconds(), 0.1)))
    log.info("drained %d round(s), %d key(s)", len(rounds), sum(r["keys"] for r in rounds))
    summary_table("ingest-on-upload", rounds or [{"round": 0, "events": 0, "keys": 0}],
                  f"{len(rounds)} round(s), {sum(r['keys'] for r in rounds)} key(s) brought up to date")
    return {"rounds": len(rounds), "keys": sum(r["keys"] for r in rounds)}


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
