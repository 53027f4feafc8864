"""Spot interruptions resume by themselves, end to end: a real Prefect server with the automations,
real process workers started like ECS tasks (`prefect flow-run execute`, SIGTERM → reschedule),
the real MiniLM model and LanceDB. Each test interrupts runs the way Spot and lost hosts do and
counts side effects (task runs that actually executed), not states alone."""

from __future__ import annotations

import random
import shutil
import signal
import time
from uuid import UUID

import pytest

from runtime.writers import _pid_alive
from tests.operations.conftest import PREFIX, flow_process, kill_tree, seed, states_of, task_runs_named

pytestmark = [pytest.mark.slow]

BATCH = 2  # documents per batch: the sample help centre becomes 29 batches, so every interruption lands mid-run


@pytest.fixture(scope="module")
def clean_rows(stack, tmp_path_factory, shared_embedder):
    """(chunk id, text) of one uninterrupted in-process run over the stack's own corpus (chunk ids
    hash the source URIs, so it must be the same files); then only the sources are kept."""
    from flows.ingest import ingest
    from spotline import resources
    from spotline.settings import get_settings
    from tests.conftest import use_settings

    shutil.rmtree(stack.home / "store", ignore_errors=True)
    seed(stack.home / "store")
    with pytest.MonkeyPatch.context() as mp:
        res = use_settings(mp, tmp_path_factory.mktemp("clean"), SPOTLINE_STORE__ROOT=str(stack.home / "store"))
        res.__dict__["_embedder"] = shared_embedder
        ingest(prefix=PREFIX, batch_documents=BATCH)
        rows = {(r["chunk_id"], r["text"]) for r in res.index.all_records()}
    get_settings.cache_clear()
    resources._resources.clear()
    return rows


def fresh_corpus(stack) -> None:
    """The same source files (same versions, so the same chunk ids); nothing Spotline wrote.

    The embedding cache goes too: each attempt then has real model work to be interrupted in. With
    the clean run's vectors cached, a whole attempt takes about two seconds and a run would finish
    before the signals could land.
    """
    shutil.rmtree(stack.home / "index", ignore_errors=True)
    shutil.rmtree(stack.home / "store" / "_spotline", ignore_errors=True)


def index_rows(stack) -> set[tuple[str, str]]:
    from spotline.index.lance import LanceIndex

    return {(r["chunk_id"], r["text"]) for r in LanceIndex(stack.home / "index", "spotline-chunks").all_records()}


def batch_runs(stack, flow_run_id: UUID) -> dict[str, list[str]]:
    """ingest-batch task runs of a flow run, by name -> state names (Completed = executed, Cached = reused)."""
    return task_runs_named(stack, flow_run_id, "ingest-batch-")


def executed(stack, flow_run_id: UUID) -> int:
    return sum(names.count("Completed") for names in batch_runs(stack, flow_run_id).values())


def running_attempt(stack, flow_run_id: UUID, attempt: int, timeout: float = 240):
    return stack.wait(flow_run_id, lambda r: r.state.is_running() and r.run_count == attempt and r.infrastructure_pid,
                      timeout, f"attempt {attempt} to be running")


def sigterm_and_wait_rescheduled(stack, run) -> tuple[float, float]:
    """SIGTERM the flow's supervisor; returns (s until the run is Scheduled again, s until the process is gone)."""
    pid = flow_process(run)
    sent = time.monotonic()
    import os

    os.kill(pid, signal.SIGTERM)
    back = stack.wait(run.id, lambda r: r.state.is_scheduled() or r.state.is_final() or r.run_count > run.run_count,
                      60, "the run to be rescheduled")
    rescheduled = time.monotonic() - sent
    deadline = time.monotonic() + 40
    while _pid_alive(pid):  # a zombie counts as gone: the worker may not have reaped it yet
        assert time.monotonic() < deadline, "the flow process did not exit after SIGTERM"
        time.sleep(0.1)
    assert back.state.name == "AwaitingRetry" or back.run_count > run.run_count, back.state
    return rescheduled, time.monotonic() - sent


@pytest.mark.timeout(1200)
def test_sigterm_at_random_points_resumes_the_same_run_and_never_redoes_a_finished_batch(stack, clean_rows):
    fresh_corpus(stack)
    rng = random.Random(2026)
    # Ten signals must all land before the run ends, however fast an attempt starts. With the ONNX
    # runtime an attempt is working within ~3 s, and a CI run saw it finish all 29 two-document
    # batches by the ninth attempt. On torch each attempt first spends ~7 s loading, as it did on
    # Fargate before ONNX, and one-document batches double the kill points: 58 batches, where ten
    # attempts finish about 15 and at worst about 35.
    budget_env = {"env": {"SPOTLINE_PREFECT__INTERRUPTION_BUDGET": "50", "SPOTLINE_EMBEDDING__WORKERS": "1",
                          "SPOTLINE_EMBEDDING__RUNTIME": "torch"}}
    from prefect.deployments import run_deployment

    first = run_deployment("ingest-documents/ingest-adhoc", parameters={"prefix": PREFIX, "batch_documents": 1},
                           job_variables=budget_env, timeout=0)
    trials = []
    for trial in range(10):
        run = running_attempt(stack, first.id, trial + 1)
        done_before = executed(stack, first.id)
        if trial % 2:  # anywhere in the attempt, start-up included
            time.sleep(rng.uniform(0, 6))
        else:  # just after this attempt finished a batch of its own
            stack.wait(first.id, lambda r: executed(stack, first.id) > done_before, 240, "a batch to finish")
            time.sleep(rng.uniform(0, 1.5))
        to_scheduled, to_exit = sigterm_and_wait_rescheduled(stack, stack.wait(first.id, lambda r: True, 5, "read"))
        trials.append((trial, round(to_scheduled, 2), round(to_exit, 2), executed(stack, first.id)))
    final = stack.wait(first.id, lambda r: r.state.is_final(), 600, "the run to finish")
    print("trials (trial, SIGTERM->Scheduled s, SIGTERM->exit s, batches executed so far):", trials)

    assert final.state.is_completed(), final.state
    assert final.run_count == 11  # the same flow run id came back after each of the 10 signals
    assert sum(s.name == "AwaitingRetry" for s in states_of(stack, first.id)) == 10
    batches = batch_runs(stack, first.id)
    files = [p for p in (stack.home / "store" / PREFIX).rglob("*") if p.is_file()]
    assert len(batches) == len(files) >= 50, "one batch per document"
    redone = {name: names for name, names in batches.items() if names.count("Completed") != 1}
    assert not redone, f"batches executed more than once or never: {redone}"
    assert sum(names.count("Cached") for names in batches.values()) > 0  # finished work came back Cached
    assert index_rows(stack) == clean_rows


@pytest.mark.timeout(900)
def test_a_lost_host_is_detected_by_heartbeats_and_past_the_budget_the_run_finishes_on_demand(stack, clean_rows):
    from prefect.deployments import run_deployment

    fresh_corpus(stack)
    first = run_deployment("ingest-documents/ingest-adhoc", parameters={"prefix": PREFIX, "batch_documents": BATCH},
                           timeout=0)
    # Interruption 1: Spot's notice.
    run = running_attempt(stack, first.id, 1)
    stack.wait(first.id, lambda r: executed(stack, first.id) >= 1, 240, "a batch to finish")
    sigterm_and_wait_rescheduled(stack, stack.wait(first.id, lambda r: True, 5, "read"))
    # Interruption 2: the host vanishes (worker, supervisor and engine SIGKILLed); a new host's worker waits.
    run = running_attempt(stack, first.id, 2)
    done_before = executed(stack, first.id)
    stack.wait(first.id, lambda r: executed(stack, first.id) > done_before, 240, "a batch of this attempt")
    stack.kill("main-1")
    kill_tree(flow_process(stack.wait(first.id, lambda r: True, 5, "read")), signal.SIGKILL)
    killed_at = time.monotonic()
    stack.start_worker("spotline-local", "main-2")
    crashed = stack.wait(first.id, lambda r: r.state.is_crashed() or r.run_count >= 3, 240, "heartbeat detection")
    detected_after = time.monotonic() - killed_at
    # Interruption 3: Spot again. The budget (3) is spent: the run hands itself to the on-demand pool.
    run = running_attempt(stack, first.id, 3, timeout=300)
    sigterm_and_wait_rescheduled(stack, run)
    original = stack.wait(first.id, lambda r: r.state.is_final(), 300, "the hand-off")
    assert original.state.is_cancelled(), original.state
    assert "continues as flow run" in original.state.message and "on-demand" in original.state.message
    history = states_of(stack, first.id)
    assert any(s.is_crashed() and "no heartbeat" in (s.message or "") for s in history), [s.name for s in history]
    with stack.client() as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        moved = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"resumes:{first.id}"])))
    assert len(moved) == 1
    finished = stack.wait(moved[0].id, lambda r: r.state.is_final(), 400, "the on-demand run to finish")
    assert finished.state.is_completed(), finished.state
    assert finished.work_pool_name == "spotline-local-fallback"
    assert finished.parameters == first.parameters
    print(f"SIGKILL -> Crashed by heartbeat automation: {detected_after:.0f} s")
    assert index_rows(stack) == clean_rows
