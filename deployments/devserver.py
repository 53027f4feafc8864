"""Start and stop a local Prefect server (SQLite) on loopback, for the demo, tests and benchmarks.

``python -m deployments.devserver start`` prints the API URL; ``stop`` ends it. The server's state
(PREFECT_HOME, the SQLite database, the pid file) lives under the given home folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from spotline.settings import DEFAULT_HOME


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_LOGGING_LEVEL=env.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    )
    return env


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(home: Path = DEFAULT_HOME, port: int | None = None, timeout: float = 120,
          extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start` and wait until /api/health answers. Returns (process, API URL)."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {**server_env(home, port), **(extra_env or {})}
    log = open(home / "prefect-server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    (home / "prefect-server.pid").write_text(str(proc.pid))
    api = env["PREFECT_API_URL"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; see {home / 'prefect-server.log'}")
        if healthy(api):
            return proc, api
        time.sleep(0.5)
    stop_process(proc.pid)
    raise TimeoutError(f"prefect server did not become healthy in {timeout}s; see {home / 'prefect-server.log'}")


def stop_process(pid: int, grace: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(home: Path = DEFAULT_HOME) -> None:
    pid_file = home / "prefect-server.pid"
    if pid_file.exists():
        stop_process(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    home = Path(os.environ.get("SPOTLINE_HOME", DEFAULT_HOME))
    if cmd == "start":
        port = int(sys.argv[2]) if len(sys.argv) > 2 else 4200
        _, api = start(home, port)
        print(api)
    elif cmd == "stop":
        stop(home)
    else:
        sys.exit(f"usage: python -m deployments.devserver start [PORT] | stop")
