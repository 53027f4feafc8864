"""Prefect side of the LLM gateway: every worker shares the server's limits per provider.

The gateway itself (spotline.llm) knows nothing of Prefect. Inside a flow run with a Prefect
server, :func:`use_server_limits` swaps its in-process limiter for the server's global
concurrency limits (``spotline-llm-<provider>``) and rate limits (``spotline-llm-<provider>-rate``),
so every task, thread and worker of every flow shares one budget per provider. Limits are
upserted from settings at the start of the run: edit them in the UI (Concurrency page) and the
next run puts the settings back, so settings stay the one source of truth.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from prefect import get_run_logger
from prefect.concurrency.sync import concurrency, rate_limit

from spotline.llm.gateway import Gateway
from spotline.llm.limits import DEFAULT_CONCURRENCY, Limiter, burst_for
from spotline.settings import LLMSettings


LOCAL_PROVIDERS = frozenset({"local"})


def limit_name(provider: str) -> str:
    return f"spotline-llm-{provider}"


class PrefectLimiter:
    """Remote providers on the server's limits; the local model on the in-process limiter, because
    it runs inside each worker (a server-wide limit of 1 would serialise every worker's model)."""

    def __init__(self, settings: LLMSettings, local: Limiter):
        self.rates = {p: r for p, r in settings.rate_per_minute.items() if r}
        self.local = local

    @contextmanager
    def slot(self, provider: str) -> Iterator[None]:
        if provider in LOCAL_PROVIDERS:
            with self.local.slot(provider):
                yield
            return
        if provider in self.rates:
            rate_limit(limit_name(provider) + "-rate", occupy=1, strict=True)
        # a failed lease renewal must not cancel the thread mid-call (Prefect's CancelledError is a
        # BaseException that no per-item error handling would catch)
        with concurrency(limit_name(provider), occupy=1, strict=True, raise_on_lease_renewal_failure=False):
            yield


def ensure_server_limits(settings: LLMSettings) -> list[str]:
    from prefect.client.orchestration import get_client

    names = []
    with get_client(sync_client=True) as client:
        remote = (set(settings.concurrency) | {m.provider for m in settings.models.values()}) - LOCAL_PROVIDERS
        for provider in sorted(remote):
            client.upsert_global_concurrency_limit_by_name(limit_name(provider), settings.concurrency.get(provider, DEFAULT_CONCURRENCY))
            names.append(limit_name(provider))
        for provider, per_minute in settings.rate_per_minute.items():
            if per_minute and provider not in LOCAL_PROVIDERS:
                client.upsert_global_concurrency_limit_by_name(
                    limit_name(provider) + "-rate", burst_for(per_minute), slot_decay_per_second=per_minute / 60.0
                )
                names.append(limit_name(provider) + "-rate")
    return names


def use_server_limits(gateway: Gateway) -> bool:
    """Put the gateway on the server's limits when settings allow and a server is configured."""
    from prefect.settings import PREFECT_API_URL

    mode = gateway.cfg.limiter
    if mode == "local" or (mode == "auto" and not PREFECT_API_URL.value()):
        return False
    names = ensure_server_limits(gateway.cfg)
    if not isinstance(gateway.limiter, PrefectLimiter):
        gateway.limiter = PrefectLimiter(gateway.cfg, gateway.limiter)
    get_run_logger().info("LLM calls share the server's limits: %s", ", ".join(names))
    return True
