"""What `make demo` leaves behind: a local Prefect server with the catalog's deployments on it and a
worker on spotline-local, idempotent to bring up again, and stopped by `make stop`. Real server,
real worker, on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deployments import catalog, devserver
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    from runtime.writers import _pid_alive

    return _pid_alive(pid)


def test_the_demo_stack_serves_every_deployment_and_a_worker_and_stops_cleanly(tmp_path, monkeypatch):
    home = tmp_path / "home"
    port = devserver.free_port()
    monkeypatch.setenv("SPOTLINE_HOME", str(home))
    monkeypatch.setenv("SPOTLINE_STORE__ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("SPOTLINE_INDEX__PATH", str(tmp_path / "index"))
    up = [sys.executable, "-m", "deployments.devserver", "up", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        first = subprocess.run(up, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert first.returncode == 0, first.stderr[-3000:]
        api = first.stdout.strip()
        assert api == f"http://127.0.0.1:{port}/api"
        worker = int((home / "worker.pid").read_text())
        server = int((home / "prefect-server.pid").read_text())
        assert alive(worker) and alive(server)

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            names = {d.name for d in client.read_deployments()}
            pools = {p.name for p in client.read_work_pools()}
        assert {d.name for d in catalog.all_deployments()} <= names, "a catalog deployment is missing from the UI"
        assert {"spotline-local", "spotline-local-fallback"} <= pools

        again = subprocess.run(up, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "0 change(s)" in again.stderr, again.stderr
        assert int((home / "worker.pid").read_text()) == worker, "a second worker was started"
        assert int((home / "prefect-server.pid").read_text()) == server, "a second server was started"

        stop = subprocess.run([sys.executable, "-m", "deployments.devserver", "stop"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert stop.stdout.strip() == "stopped: worker, prefect-server"
        assert not alive(worker) and not alive(server)
        assert not devserver.healthy(api)
    finally:
        devserver.stop(home)
