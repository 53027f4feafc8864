"""A deployed swarm fans its shards out as flow runs of the swarm-shard deployment (each its own
process on the worker, its own Fargate task in aws), and the coordinator aggregates them all.

The stack is the operations one (real server, catalog applied, a process worker); the target is
the model-free echo target (spotline/staging/echo.py) on loopback, so the test measures the
fan-out, not the model. The echo target answers attacks instead of refusing: the gate fails,
which is what it should do with such a target.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import uvicorn

from deployments.devserver import free_port
from spotline.staging.echo import create_echo_app

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(900)
def test_a_deployed_swarm_runs_each_shard_as_its_own_deployment_run_and_aggregates_them(stack):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_echo_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        run = run_deployment("swarm/swarm", timeout=0, parameters={
            "target_url": f"http://127.0.0.1:{port}/v1/chat", "tier": "full", "shard_size": 20,
            "judge_use": "none"})
        final = stack.wait(run.id, lambda r: r.state.is_final(), 600, "the swarm to finish", poll_s=1)
    finally:
        server.should_exit = True
    with stack.client() as client:
        shard_runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["swarm-shard"]))) if r.parameters.get("run_key") == str(run.id)]
    # 50 prompts in shards of 20: three runs of the shard deployment, each its own process, all finished.
    assert sorted(r.parameters["shard"] for r in shard_runs) == [0, 1, 2], final.state.message
    assert all(r.state.is_completed() for r in shard_runs)
    assert len({r.infrastructure_pid for r in shard_runs} | {final.infrastructure_pid}) == 4
    assert final.state.is_failed() and "ReleaseGateFailed" in (final.state.message or "")
    assert "no_refusal" in final.state.message  # the echo target obeys attacks: named as the top failure
    runs_dir = stack.home / "store" / "_spotline" / "swarm" / "runs" / str(run.id)
    graded = sum(len(p.read_text().splitlines()) for p in runs_dir.glob("shard-*/grades/part-*.jsonl"))
    assert graded == 50 and len(list(runs_dir.glob("shard-*/items.jsonl"))) == 3


@pytest.mark.timeout(600)
def test_a_staging_deployed_event_starts_the_swarm_with_its_target_and_branch(stack):
    """`spotline swarm announce` emits the event a deploy pipeline sends; the swarm deployment's
    trigger starts a run with the event's target and branch (tier auto: smoke for a feature branch)."""
    import os
    import subprocess
    import sys

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from tests.conftest import ROOT

    url = f"http://127.0.0.1:{free_port()}/v1/chat"  # nothing listens: the run ends inconclusive
    out = subprocess.run([sys.executable, "-m", "cli.main", "swarm", "announce", "--target", url,
                          "--branch", "feature/login"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PREFECT_API_URL": stack.api})
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 300
    while True:
        with stack.client() as client:
            runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["swarm"]))) if r.parameters.get("target_url") == url]
        if runs:
            break
        assert time.monotonic() < deadline, "no swarm run for the event:\n" + stack.server_events_log()
        time.sleep(1)
    assert runs[0].parameters["branch"] == "feature/login" and runs[0].parameters["tier"] == "auto"
    final = stack.wait(runs[0].id, lambda r: r.state.is_final(), 300, "the swarm to finish", poll_s=1)
    assert final.state.name == "Inconclusive", final.state  # no answer at all: no verdict, not a failed release


@pytest.mark.timeout(900)
def test_a_shard_killed_mid_run_comes_back_and_the_coordinator_waits_for_it(stack):
    """SIGKILL a running shard's process (a lost Spot task): the recovery automation puts the same
    shard run back, it sends only what it had not persisted, and the coordinator, which followed it
    through the crash, aggregates all 50 answers."""
    import signal

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment

    from deployments.localstack import flow_process, kill_tree

    app = create_echo_app(delay_s=0.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    def shard_runs(parent):
        with stack.client() as client:
            return [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["swarm-shard"]))) if r.parameters.get("run_key") == str(parent)]

    try:
        run = run_deployment("swarm/swarm", timeout=0, parameters={
            "target_url": f"http://127.0.0.1:{port}/v1/chat", "tier": "full", "shard_size": 25,
            "judge_use": "none", "concurrency": 2})
        deadline = time.monotonic() + 300
        while True:  # a shard that is running and has sent a few prompts
            running = [r for r in shard_runs(run.id) if r.state.is_running() and r.infrastructure_pid]
            if running:
                break
            assert time.monotonic() < deadline, "no shard started"
            time.sleep(0.5)
        time.sleep(4)  # a few prompts sent (0.5 s each, 2 at a time), most of its 25 not yet
        victim = running[0]
        kill_tree(flow_process(victim), signal.SIGKILL)
        final = stack.wait(run.id, lambda r: r.state.is_final(), 600, "the swarm to finish", poll_s=1)
    finally:
        server.should_exit = True
    with stack.client() as client:
        again = client.read_flow_run(victim.id)
    assert again.state.is_completed() and again.run_count >= 2, again.state
    assert final.state.is_failed() and "ReleaseGateFailed" in (final.state.message or ""), final.state
    runs_dir = stack.home / "store" / "_spotline" / "swarm" / "runs" / str(run.id)
    graded = {json.loads(line)["id"] for p in runs_dir.glob("shard-*/grades/part-*.jsonl")
              for line in p.read_text().splitlines()}
    assert len(graded) == 50
