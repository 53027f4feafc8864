#!/usr/bin/env python
"""Swarm harness benchmark: throughput against a free target, and what a 429 storm costs.

    make bench-swarm                     # about 4 minutes on a quiet 2-core machine
    python bench/swarm_bench.py --requests 2000 --skip-storm

1. Harness throughput: the echo target (spotline/staging/echo.py, no model, answers at once) in
   its own process; three clients, each in its own process, one after the other in this run,
   10,000 requests at concurrency 64 each:
   - Spotline's harness (spotline.swarm.fire: adaptive limit, retries, answer/context parsing);
   - a plain asyncio + httpx loop (64 workers posting and decoding JSON, nothing else), the
     issue's yardstick, and the same loop on aiohttp (what the harness uses);
   - locust (FastHttpUser, 64 users, headless, through its library API).
   Goal: Spotline >= 0.8x the plain httpx loop (and, since it is built on aiohttp, near that loop).
2. A 429 storm: the staging app's slow build (the real app: index, guards, the local model) takes
   2 requests at a time and answers 429 with Retry-After beyond that, plus 5% 503s. The committed
   suite (50 prompts) is fired at concurrency 16 and graded with the deterministic checks. Goal:
   zero answers counted as product failures because of throttling. `--skip-storm` leaves it out.
Writes the tables to bench/out/swarm-results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
PY = sys.executable

TARGET = """
import sys, uvicorn
from spotline.staging.echo import create_echo_app
uvicorn.run(create_echo_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
"""

SPOTLINE = """
import asyncio, json, sys, time
from spotline.settings import TargetSpec
from spotline.swarm.fire import fire
from spotline.swarm.suite import item_of
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
items = [item_of({"category": "normal", "text": f"question {i}", "turns": [f"question {i}"]}) for i in range(n)]
t = time.perf_counter()
results, load = asyncio.run(fire(TargetSpec(url=url), items, concurrency=c, timeout_s=30, max_attempts=3,
                                 max_duration_s=3600))
wall = time.perf_counter() - t
ok = sum(1 for r in results if r.error is None and r.answer)
print(json.dumps({"ok": ok, "wall_s": wall, "peak": load.peak_in_flight}))
"""

PLAIN = """
import asyncio, json, sys, time
import httpx
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    ok = 0
    queue = list(range(n))
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=c, max_keepalive_connections=c)) as client:
        async def worker():
            nonlocal ok
            while queue:
                i = queue.pop()
                r = await client.post(url, json={"message": f"question {i}", "history": []}, timeout=30)
                if r.status_code == 200 and r.json().get("answer"):
                    ok += 1
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        return ok, time.perf_counter() - t
ok, wall = asyncio.run(main())
print(json.dumps({"ok": ok, "wall_s": wall}))
"""

PLAIN_AIOHTTP = """
import asyncio, json, sys, time
import aiohttp
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    ok = 0
    queue = list(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
        async def worker():
            nonlocal ok
            while queue:
                i = queue.pop()
                async with session.post(url, json={"message": f"question {i}", "history": []}) as r:
                    body = await r.json()
                    if r.status == 200 and body.get("answer"):
                        ok += 1
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        return ok, time.perf_counter() - t
ok, wall = asyncio.run(main())
print(json.dumps({"ok": ok, "wall_s": wall}))
"""

LOCUST = """
import gevent.monkey
gevent.monkey.patch_all()
import json, sys, time
import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, path = url.split("/v1/", 1)
state = {"sent": 0, "ok": 0}
class Chat(FastHttpUser):
    host = host
    wait_time = constant(0)
    @task
    def ask(self):
        if state["sent"] >= n:
            gevent.sleep(0.05)
            return
        state["sent"] += 1
        with self.client.post("/v1/" + path, json={"message": f"question {state['sent']}", "history": []},
                              catch_response=True) as r:
            if r.status_code == 200 and r.json().get("answer"):
                state["ok"] += 1
env = Environment(user_classes=[Chat])
runner = env.create_local_runner()
t = time.perf_counter()
runner.start(c, spawn_rate=10000)
while state["ok"] + env.stats.total.num_failures < n:
    gevent.sleep(0.01)
wall = time.perf_counter() - t
runner.quit()
print(json.dumps({"ok": state["ok"], "wall_s": wall}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("the target exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError("the target did not start")
            time.sleep(0.2)


# locust runs in a throwaway environment of its own (`uv run --with`): installed beside Prefect, its
# dependencies (gevent & co.) broke the server's event intake for a burst of 500 uploads in the tests.
LOCUST_CMD = [shutil.which("uv") or "uv", "run", "--no-project", "--with", "locust==2.47.0", "python"]


def client(code: str, url: str, n: int, c: int) -> dict:
    cmd = LOCUST_CMD if code is LOCUST else [PY]
    out = subprocess.run([*cmd, "-c", code, url, str(n), str(c)], cwd=ROOT, capture_output=True, text=True,
                         timeout=3600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(n: int, c: int) -> list[str]:
    port = free_port()
    target = subprocess.Popen([PY, "-c", TARGET, str(port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(port, target)
        url = f"http://127.0.0.1:{port}/v1/chat"
        client(PLAIN, url, 500, c)  # warm the target up
        runs = {"Spotline harness (spotline.swarm.fire)": client(SPOTLINE, url, n, c),
                "plain asyncio + httpx loop": client(PLAIN, url, n, c),
                "plain asyncio + aiohttp loop": client(PLAIN_AIOHTTP, url, n, c),
                "locust 2 (FastHttpUser, library API)": client(LOCUST, url, n, c)}
    finally:
        target.terminate()
        target.wait(10)
    plain = n / runs["plain asyncio + httpx loop"]["wall_s"]
    lines = [f"| Client ({n:,} requests, concurrency {c}, echo target) | answers | wall | requests/s | vs plain loop |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in runs.items():
        rps = n / r["wall_s"]
        lines.append(f"| {name} | {r['ok']:,} | {r['wall_s']:.1f} s | {rps:,.0f} | {rps / plain:.2f}x |")
    peak = runs["Spotline harness (spotline.swarm.fire)"].get("peak")
    lines.append(f"\nSpotline's peak requests in flight: {peak} (bound {c}).")
    return lines


def storm(concurrency: int) -> list[str]:
    """The slow build of the real staging app, throttling; the suite graded with the checks."""
    home = Path(tempfile.mkdtemp(prefix="swarm-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPOTLINE_HOME": str(home), "SPOTLINE_STORE__ROOT": str(home / "store"),
           "SPOTLINE_INDEX__PATH": str(home / "index"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    from prefect.testing.utilities import prefect_test_harness

    from spotline.resources import get_resources

    res = get_resources()
    for path in sorted((ROOT / "data" / "sample_corpus").rglob("*.md")):
        res.store.put(f"corpus/{path.relative_to(ROOT / 'data' / 'sample_corpus')}", path.read_bytes())
    with prefect_test_harness():
        from flows.ingest import ingest

        ingest()
    port = free_port()
    app = subprocess.Popen([PY, "-m", "spotline.staging"], cwd=ROOT, env={
        **env, "SPOTLINE_STAGING__BUILD": "slow", "SPOTLINE_STAGING__PORT": str(port),
        "SPOTLINE_STAGING__SLOW_CAPACITY": "2", "SPOTLINE_STAGING__SLOW_DELAY_S": "0.5",
        "SPOTLINE_STAGING__SLOW_ERROR_RATE": "0.05"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import asyncio

    from spotline.settings import TargetSpec
    from spotline.swarm.fire import fire
    from spotline.swarm.grading import FAIL, UNANSWERED, CheckConfig, check
    from spotline.swarm.suite import from_rows, read_jsonl

    try:
        wait_for(port, app)
        items = from_rows("suite", read_jsonl(ROOT / "data" / "swarm_suite" / "prompts.jsonl")).items
        results, load = asyncio.run(fire(TargetSpec(url=f"http://127.0.0.1:{port}/v1/chat"), items,
                                         concurrency=concurrency, timeout_s=120, max_attempts=12,
                                         max_duration_s=1800))
    finally:
        app.terminate()
        app.wait(30)
    by_id = {i.id: i for i in items}
    embed = lambda texts: res.embedder.embed(texts).vectors  # noqa: E731
    cfg = CheckConfig(["LARKSPUR-CANARY-7Q2X-91KD"], 60.0, 0.45, 0.5)
    grades = [check(by_id[r.id], r, cfg, embed) for r in results]
    throttled_answers = sum(1 for r in results if r.throttled)
    failed = [g for g in grades if g.outcome == FAIL]
    from_throttling = [g for g in failed if {"http_error", "timeout"} & set(g.failures)]
    return [
        f"| 429 storm: slow build, capacity 2, 5% 503, {len(items)} prompts at concurrency {concurrency} | value |",
        "| --- | --- |",
        f"| 429/503 answers absorbed by retries | {sum(r.throttled for r in results)} |",
        f"| prompts that met throttling at least once | {throttled_answers} |",
        f"| adaptive limit: bound → lowest | {concurrency} → {load.lowest_limit} |",
        f"| answered / unanswered (throttled away) | {sum(1 for g in grades if g.outcome != UNANSWERED)} / "
        f"{sum(1 for g in grades if g.outcome == UNANSWERED)} |",
        f"| answers failed by the checks (any reason) | {len(failed)} ({', '.join(sorted({f for g in failed for f in g.failures})) or 'none'}) |",
        f"| **answers counted as product failures because of throttling** | **{len(from_throttling)}** |",
        f"| wall time | {load.wall_s:.1f} s |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--skip-storm", action="store_true")
    args = ap.parse_args()
    out = [f"# Swarm benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores", ""]
    out += throughput(args.requests, args.concurrency)
    if not args.skip_storm:
        out += [""] + storm(16)
    text = "\n".join(out)
    print(text)
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "swarm-results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
