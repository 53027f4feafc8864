"""Local mode's S3 notifications: watch the local object store and emit the same Prefect events.

    python -m runtime.watcher [--interval 2]

Every interval it lists the source prefix and compares with the previous listing: a new or
changed object is ``spotline.object.created``, a vanished one ``spotline.object.removed``, with
the store's version stamp as ETag and sequencer, so the event ids are deterministic exactly as
the SQS relay's are (a restarted watcher re-announcing a change stores nothing twice). From there
the path is the one S3 uploads take: the ``ingest-on-upload`` deployment's trigger and drain.
It polls instead of using inotify: it must see what any process, container or network share
wrote, and listing a prefix is what the flow does anyway. Changes made while it was not running
are caught by the nightly full sync.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from runtime.events import emit, to_event
from spotline.ingestion.notifications import ObjectChange
from spotline.storage.base import ObjectStore

log = logging.getLogger("spotline.watcher")


class StoreWatcher:
    def __init__(self, store: ObjectStore, prefix: str, bucket: str, system_prefix: str):
        self.store, self.prefix, self.bucket, self.system = store, prefix, bucket, system_prefix
        self.seen: dict[str, str] = self._listing()

    def _listing(self) -> dict[str, str]:
        return {o.key: o.version for o in self.store.list(self.prefix)
                if not o.key.startswith(self.system) and not o.key.endswith("/")}

    def changes(self) -> list[ObjectChange]:
        """What changed since the last call (or since the watcher started)."""
        now = self._listing()
        found = [ObjectChange("created", self.bucket, k, etag=v, sequencer=v)
                 for k, v in sorted(now.items()) if self.seen.get(k) != v]
        found += [ObjectChange("removed", self.bucket, k, etag=v, sequencer=f"removed-{v}")
                  for k, v in sorted(self.seen.items()) if k not in now]
        self.seen = now
        return found

    def run_forever(self, client, interval_s: float = 2.0, stop=lambda: False) -> None:
        pending: list[ObjectChange] = []
        while not stop():
            pending += self.changes()
            if pending:
                try:
                    emit(client, [to_event(c) for c in pending])
                    log.info("announced %d change(s)", len(pending))
                    pending = []
                except Exception as exc:  # the server is down: keep them and try again next round
                    log.warning("could not announce %d change(s): %s", len(pending), exc)
            time.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.watcher", description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between listings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call drowns what matters
    from prefect.client.orchestration import get_client

    from spotline.resources import get_resources

    res = get_resources()
    s = res.settings
    watcher = StoreWatcher(res.store, s.ingest.source_prefix, s.store.bucket, s.store.system_prefix)
    log.info("watching %s every %.1f s (%d objects already there)", res.store.uri(s.ingest.source_prefix),
             args.interval, len(watcher.seen))
    with get_client(sync_client=True) as client:
        watcher.run_forever(client, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
