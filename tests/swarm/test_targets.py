"""Where a swarm may fire: the configured target's host, listed hosts, nothing else (spotline/swarm/targets.py)."""

from __future__ import annotations

import pytest

from spotline.swarm.targets import refusal

CONFIGURED = "https://staging.larkspur.internal/v1/chat"
LISTED = ["127.0.0.1", "*.preview.larkspur.dev", "[::1]"]


@pytest.mark.parametrize("url", [
    "https://staging.larkspur.internal/v2/chat",  # the configured host, another path
    "http://127.0.0.1:8700/v1/chat",
    "https://pr-123.preview.larkspur.dev/chat",
    "https://a.b.preview.larkspur.dev/chat",
    "http://[::1]:9000/chat",
    "HTTPS://PR-9.Preview.Larkspur.Dev./chat",  # case and a trailing dot do not matter
])
def test_the_configured_host_and_listed_hosts_may_be_fired_at(url):
    assert refusal(url, CONFIGURED, LISTED) is None


@pytest.mark.parametrize("url, why", [
    ("https://collector.example.net/chat", "not in swarm.allowed_hosts"),
    ("https://preview.larkspur.dev/chat", "not in swarm.allowed_hosts"),  # the wildcard is for subdomains only
    ("https://evilpreview.larkspur.dev/chat", "not in swarm.allowed_hosts"),
    ("https://preview.larkspur.dev.evil.net/chat", "not in swarm.allowed_hosts"),
    ("https://127.0.0.1@collector.example.net/chat", "not in swarm.allowed_hosts"),  # userinfo is not the host
    ("http://", "has no host"),
    ("ftp://127.0.0.1/chat", "is not an http(s) URL"),
    ("None", "is not an http(s) URL"),
])
def test_any_other_host_or_scheme_is_refused_with_the_reason(url, why):
    assert why in (refusal(url, CONFIGURED, LISTED) or "")
