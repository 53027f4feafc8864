"""Operations benchmark: uploads to searchable, and what Spot interruptions cost.

    make bench-ops        (about 12 minutes on 2 cores)

Stands up a whole local Spotline (deployments/localstack.py: Prefect server with the automations,
the catalog applied, process workers started like ECS tasks, the store watcher) and measures, in
one run:

1. upload -> searchable latency for single objects (p50/p95 of 5) and for a burst of 500 small
   documents written within a minute (p50/p95 over the 500), and how many flow runs the burst
   started (drain runs and their ingest subflow runs);
2. on the sample help centre in batches of 3 documents: SIGTERM -> rescheduled,
   rescheduled -> running again, work lost per interruption (p50, max), and the wall time of an
   ingest interrupted 3 times against the same ingest not interrupted at all.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLE = ROOT / "data" / "sample_corpus"
PREFIX = "corpus/help-centre/"
TOPICS = ["billing", "refunds", "single sign-on", "exports", "webhooks", "audit logs", "API keys", "teams",
          "notifications", "data retention"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def doc(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"# Note {i}: {topic}\n\nCustomer note number {i} about {topic}. The account owner asked how {topic} "
            f"works for workspace {i * 7919 % 10007}. Steps: open Settings, choose {topic.title()}, confirm.\n")


def keys_in_index(index_dir: Path, prefix: str) -> set[str]:
    from spotline.index.lance import LanceIndex

    try:
        rows = LanceIndex(index_dir, "spotline-chunks").all_records()
    except Exception:
        return set()
    return {r["source_uri"].split("/store/", 1)[-1] for r in rows if prefix in r["source_uri"]}


def runs_of(stack, deployment: str, since_ids: set) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with stack.client() as client:
        dep = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])))
    return [r for r in runs if r.id not in since_ids]


def subflow_runs(stack, parents: list) -> int:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with stack.client() as client:
        return len(client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[r.id for r in parents]))))


def uploads(stack, store: Path, index: Path) -> list[str]:
    out = []
    before = {r.id for r in runs_of(stack, "ingest-on-upload/ingest-on-upload", set())}
    singles = []
    for i in range(5):
        key = f"corpus/single-{i}/note.md"
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        (store / key).write_text(doc(10_000 + i))
        while key not in keys_in_index(index, "corpus/single-"):
            time.sleep(0.25)
        singles.append(time.monotonic() - t0)
        time.sleep(35)  # past the trigger window: each upload is a burst of one
    out.append(f"single upload -> searchable (5 objects, one at a time): p50 {pct(singles, .5):.1f} s, "
               f"p95 {pct(singles, .95):.1f} s")
    before = {r.id for r in runs_of(stack, "ingest-on-upload/ingest-on-upload", set())}
    written: dict[str, float] = {}
    start = time.monotonic()
    for i in range(500):  # 500 objects within a minute
        key = f"corpus/burst/note-{i:03d}.md"
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_text(doc(i))
        written[key] = time.monotonic()
        time.sleep(max(0.0, start + (i + 1) * 0.11 - time.monotonic()))
    burst_s = time.monotonic() - start
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    while len(seen) < len(written) and time.monotonic() < deadline:
        now = time.monotonic()
        for key in keys_in_index(index, "corpus/burst/") - set(seen):
            seen[key] = now
        time.sleep(1.0)
    latencies = [seen[k] - written[k] for k in seen]
    drains = runs_of(stack, "ingest-on-upload/ingest-on-upload", before)
    while any(not (r.state and r.state.is_final()) for r in drains):
        time.sleep(2)
        drains = runs_of(stack, "ingest-on-upload/ingest-on-upload", before)
    out.append(f"burst of 500 written in {burst_s:.0f} s -> searchable: {len(seen)}/500 indexed, "
               f"p50 {pct(latencies, .5):.1f} s, p95 {pct(latencies, .95):.1f} s, "
               f"last {max(latencies):.1f} s after its upload")
    out.append(f"flow runs the burst started: {len(drains)} ingest-on-upload run(s) "
               f"({sum(1 for r in drains if r.run_count > 0)} ran), {subflow_runs(stack, drains)} ingest-documents subflow run(s)")
    return out


def reset_index(stack, index: Path) -> None:
    shutil.rmtree(index, ignore_errors=True)
    shutil.rmtree(stack.home / "store" / "_spotline", ignore_errors=True)


def one_ingest(stack, index: Path, interruptions: int) -> tuple[float, list[float], list[float], list[float]]:
    """Wall time of an ingest of the sample help centre with `interruptions` SIGTERMs (after a batch each)."""
    from prefect.deployments import run_deployment

    from deployments.localstack import flow_process
    from runtime.history import task_runs_of
    from runtime.recovery import interruptions as history

    reset_index(stack, index)
    env = {"env": {"SPOTLINE_PREFECT__INTERRUPTION_BUDGET": "10", "SPOTLINE_EMBEDDING__WORKERS": "1"}}
    t0 = time.monotonic()
    run = run_deployment("ingest-documents/ingest-adhoc", parameters={"prefix": PREFIX, "batch_documents": 3},
                         job_variables=env, timeout=0)
    to_sched, to_running = [], []

    def executed() -> int:
        with stack.client() as client:
            tasks = task_runs_of(client, run.id)
        return sum(1 for t in tasks if t.name.startswith("ingest-batch-") and t.state and t.state.name == "Completed")

    for attempt in range(1, interruptions + 1):
        stack.wait(run.id, lambda r: r.state.is_running() and r.run_count == attempt and r.infrastructure_pid, 300,
                   f"attempt {attempt}")
        done = executed()
        stack.wait(run.id, lambda r: executed() > done, 300, "a batch")
        current = stack.wait(run.id, lambda r: True, 5, "read")
        sent = time.monotonic()
        os.kill(flow_process(current), signal.SIGTERM)
        stack.wait(run.id, lambda r: r.state.is_scheduled(), 60, "rescheduled", poll_s=0.05)
        to_sched.append(time.monotonic() - sent)
        back = time.monotonic()
        stack.wait(run.id, lambda r: r.state.is_running() and r.run_count == attempt + 1, 300, "running again",
                   poll_s=0.1)
        to_running.append(time.monotonic() - back)
    final = stack.wait(run.id, lambda r: r.state.is_final(), 900, "the run to finish")
    wall = time.monotonic() - t0
    assert final.state.is_completed(), final.state
    with stack.client() as client:
        lost = [i.work_lost_s for i in history(client, run.id)]
    return wall, to_sched, to_running, lost


def main() -> int:
    from deployments.localstack import LocalStack

    home = Path(tempfile.mkdtemp(prefix="spotline-opsbench-"))
    store, index = home / "store", home / "index"
    for path in SAMPLE.rglob("*"):
        if path.is_file():
            dest = store / PREFIX / path.relative_to(SAMPLE)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    stack = LocalStack.start(home, {"SPOTLINE_STORE__ROOT": str(store), "SPOTLINE_INDEX__PATH": str(index),
                                    "SPOTLINE_EMBEDDING__WORKERS": "1"})
    # Prefect reads its settings once, at import (LocalStack.start imported it): the environment
    # variable alone would leave run_deployment talking to a throwaway temporary server.
    os.environ["PREFECT_API_URL"] = stack.api
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = temporary_settings({PREFECT_API_URL: stack.api})
    api.__enter__()
    os.environ["SPOTLINE_STORE__ROOT"], os.environ["SPOTLINE_INDEX__PATH"] = str(store), str(index)
    lines = [f"operations benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, local stack on loopback"]
    try:
        stack.start_worker("spotline-local", "main")
        stack.start_worker("spotline-local-fallback", "fallback")
        plain, _, _, _ = one_ingest(stack, index, 0)
        interrupted, to_sched, to_running, lost = one_ingest(stack, index, 3)
        lines.append(f"SIGTERM -> rescheduled: p50 {pct(to_sched, .5):.2f} s, max {max(to_sched):.2f} s")
        lines.append(f"rescheduled -> running again: p50 {pct(to_running, .5):.1f} s, max {max(to_running):.1f} s")
        lines.append(f"work lost per interruption: p50 {statistics.median(lost):.1f} s, max {max(lost):.1f} s "
                     f"(time since the last persisted task result)")
        lines.append(f"ingest wall time: not interrupted {plain:.0f} s, interrupted 3 times {interrupted:.0f} s "
                     f"({interrupted / plain:.2f}x)")
        reset_index(stack, index)
        stack.start_watcher()
        lines += uploads(stack, store, index)
    finally:
        api.__exit__(None, None, None)
        stack.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
