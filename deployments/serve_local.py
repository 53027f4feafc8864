"""Serve every catalog deployment from this one process: no work pool, no worker.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments serve

The deployments show in the UI with their schedules and can be run from there. Handy for a
quick look; `python -m deployments apply` plus `prefect worker start --pool spotline-local` is
the setup that behaves like production (pools, fallback, automations).
"""

from __future__ import annotations

from prefect import serve

from deployments.apply import _flow
from deployments.catalog import DEPLOYMENTS


def serve_all() -> None:
    serve(*[
        _flow(d.entrypoint).to_deployment(
            name=d.name, description=d.description, parameters=dict(d.parameters) or None,
            cron=d.cron, concurrency_limit=d.concurrency, tags=list(d.tags),
        )
        for d in DEPLOYMENTS
    ])


if __name__ == "__main__":
    serve_all()
