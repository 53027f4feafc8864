"""Start and stop a local Prefect server (SQLite) on loopback, for the demo, tests and benchmarks.

``python -m deployments.devserver start`` prints the API URL; ``up`` is what the demo leaves behind:
the server, the deployment catalog applied to it (work pools, deployments, automations, limits) and
a process worker on ``spotline-local``, so the UI's Deployments page is filled and its Run button
works; ``stop`` ends all of it. State (PREFECT_HOME, the SQLite database, pid files, logs) lives
under the given home folder.
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


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def up(home: Path = DEFAULT_HOME, port: int = 4200, timeout: float = 300) -> str:
    """Server (reused when one answers on the port), catalog applied, one worker on spotline-local.

    Idempotent: a second call changes nothing and starts nothing twice. Returns the API URL.
    """
    api = f"http://127.0.0.1:{port}/api"
    if not healthy(api):
        start(home, port, timeout)
    env = server_env(home, port)
    # The catalog goes on with this machine's settings (store, index), as the worker will run them.
    apply_ = subprocess.run([sys.executable, "-m", "deployments", "apply"], env=env, capture_output=True, text=True)
    if apply_.returncode != 0:
        raise RuntimeError(f"applying the deployment catalog failed:\n{apply_.stderr[-3000:]}")
    summary = apply_.stdout.strip().splitlines()[-1:] or [""]
    worker_pid = home / "worker.pid"
    if not _alive(worker_pid):
        # Flow runs start `prefect flow-run execute` from the venv's bin/, as on an ECS task.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PREFECT_LOGGING_LEVEL"] = "INFO"
        log = open(home / "worker.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "spotline-local", "--type", "process",
             "--name", "spotline-local-worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        worker_pid.write_text(str(proc.pid))
    print(f"catalog: {summary[0]}", file=sys.stderr)
    return api


def stop(home: Path = DEFAULT_HOME) -> list[str]:
    """Stop what `up` left running (the worker, then the server); returns what was stopped."""
    stopped = []
    for name in ("worker", "prefect-server"):
        pid_file = home / f"{name}.pid"
        if pid_file.exists():
            if _alive(pid_file):
                stop_process(int(pid_file.read_text()))
                stopped.append(name)
            pid_file.unlink(missing_ok=True)
    return stopped


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    home = Path(os.environ.get("SPOTLINE_HOME", DEFAULT_HOME))
    if cmd == "start":
        port = int(sys.argv[2]) if len(sys.argv) > 2 else 4200
        _, api = start(home, port)
        print(api)
    elif cmd == "up":
        port = int(sys.argv[2]) if len(sys.argv) > 2 else 4200
        print(up(home, port))
    elif cmd == "stop":
        stopped = stop(home)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    else:
        sys.exit("usage: python -m deployments.devserver start [PORT] | up [PORT] | stop")
