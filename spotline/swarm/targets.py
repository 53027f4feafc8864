"""Which URLs a swarm may fire at.

A swarm sends the configured target's secret headers (an API key resolved from the secret store)
with every request, at up to `concurrency` requests in flight. The URL can come from an event
(`spotline.staging.deployed` carries `target`) or from a run parameter, and anyone who can emit an
event or start a run would otherwise choose where that key and that load go. So a URL that does not
come from settings must name a host on an allow-list, and anything that is not plain http(s) is
refused before a single request. Plain Python, no Prefect.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def allowed(host: str, patterns: list[str]) -> bool:
    """`host` matches a pattern exactly, or `*.example.com` matches any subdomain (not the apex)."""
    for pattern in patterns:
        pattern = pattern.lower().strip().rstrip(".").strip("[]")
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
        if host == pattern:
            return True
    return False


def refusal(url: str, configured_url: str, allowed_hosts: list[str]) -> str | None:
    """Why a run must not fire at `url` (None: it may). The configured target's host is always allowed."""
    shown = url[:80]
    if not url.lower().startswith(("http://", "https://")):
        # An event without its target renders as "" or "None": firing at the default target
        # would pass or fail a release that was never tested.
        return f"target_url {shown!r} is not an http(s) URL"
    host = host_of(url)
    if host is None:
        return f"target_url {shown!r} has no host"
    if host == host_of(configured_url) or allowed(host, allowed_hosts):
        return None
    return (f"target host {host!r} is not in swarm.allowed_hosts (SPOTLINE_SWARM__ALLOWED_HOSTS); "
            "the swarm sends the target's secret headers, so only listed hosts are fired at")
