"""A whole local Spotline on this machine: Prefect server, the catalog applied, workers, the watcher.

What the operations tests and the operations benchmark stand up, and what an operator can start by
hand (README, "Operating Spotline"). Every piece is a separate process tree, so a test can SIGTERM
or SIGKILL a flow run, a worker or a whole "host" the way Spot and lost machines do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from uuid import UUID

from spotline.settings import PROJECT_ROOT


def descendants(pid: int) -> list[int]:
    """Every process below pid, from /proc (the engine runs in a session of its own, not the group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, sig: int) -> None:
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def flow_process(run) -> int:
    """The pid of a flow run's `prefect flow-run execute` supervisor (what ECS signals on Spot)."""
    if not run.infrastructure_pid:
        raise RuntimeError(f"the worker recorded no process for flow run {run.id}")
    return int(str(run.infrastructure_pid).rsplit(":", 1)[-1])


@dataclass
class LocalStack:
    home: Path
    api: str = ""
    env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def start(cls, home: Path, spotline_env: dict[str, str] | None = None, proactive_granularity: str = "PT1S"):
        """Server (proactive automations checked every second), catalog applied with this environment."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from deployments import devserver
        from deployments.apply import apply
        from spotline.settings import Settings

        home.mkdir(parents=True, exist_ok=True)
        # The server logs at INFO: what the triggers service decided about each event (which
        # automation covered it, an event held back until the one it follows arrives) is logged
        # there, and a recovery that never started cannot be explained without it.
        server, api = devserver.start(home / "server",
                                      extra_env={"PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": proactive_granularity,
                                                 "PREFECT_LOGGING_LEVEL": "INFO",
                                                 "PREFECT_SERVER_LOGGING_LEVEL": "INFO"})
        spotline_env = spotline_env or {}
        # Workers started with `uv run` (or in an activated venv) have the venv's bin/ on PATH: the
        # pools start `prefect flow-run execute` from there.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, **spotline_env, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PREFECT_LOGGING_LEVEL": "INFO", "PATH": path, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        stack = cls(home=home, api=api, env=env, server=server)
        saved = {k: os.environ.get(k) for k in spotline_env}
        os.environ.update(spotline_env)
        try:
            with temporary_settings({PREFECT_API_URL: api}):
                apply("local", Settings())
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        return stack

    def start_worker(self, pool: str, name: str) -> subprocess.Popen:
        # No --limit: Prefect 3.8's worker holds a limiter token per flow run id, and a run that
        # SIGTERM rescheduled comes back under the same id before the old token is released, which
        # crashes the worker ("this borrower is already holding one of this CapacityLimiter's tokens").
        return self._spawn(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                  "--type", "process", "--name", name])

    def start_watcher(self, interval_s: float = 1.0, timeout: float = 90) -> subprocess.Popen:
        """Start the store watcher and return once it has its baseline listing: a file written
        before that is part of the baseline and would not be announced."""
        log = self.home / "watcher.log"
        seen = log.read_text().count("watching ") if log.exists() else 0
        proc = self._spawn("watcher", [sys.executable, "-m", "runtime.watcher", "--interval", str(interval_s)])
        deadline = time.monotonic() + timeout
        while log.read_text().count("watching ") <= seen:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the watcher did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        return proc

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env={**self.env, "PREFECT_HOME": str(self.home / f"home-{name}")},
                                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes.pop(name)
        kill_tree(proc.pid, sig)

    def client(self):
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def wait(self, flow_run_id: UUID, done: Callable, timeout: float, what: str, poll_s: float = 0.25):
        """Poll the flow run until done(run); returns the run (AssertionError with the logs on timeout)."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                run = client.read_flow_run(flow_run_id)
                if done(run):
                    return run
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(self.home.glob("*.log")))
                    raise AssertionError(f"timed out waiting for {what}: the run is "
                                         f"{run.state.name if run.state else None}\n{logs}\n{self.server_events_log()}")
                time.sleep(poll_s)

    def server_events_log(self, lines: int = 40) -> str:
        """The server's own account of events: automations that covered one, events held back for
        the one they follow, handler failures and dead-lettered messages (docs/prefect-mechanics.md 4f)."""
        log = self.home / "server" / "prefect-server.log"
        if not log.exists():
            return ""
        keep = ("prefect.server.events", "dead letter", "Failed in consume_loop", "OperationalError")
        picked = [line for line in log.read_text(errors="replace").splitlines() if any(k in line for k in keep)]
        return "--- prefect-server.log (events)\n" + "\n".join(line[:300] for line in picked[-lines:])

    def stop(self) -> None:
        from deployments import devserver

        for name in list(self.processes):
            self.kill(name)
        if self.server is not None:
            devserver.stop_process(self.server.pid)
