"""Overlapping runs and killed processes, as an operator meets them: separate processes racing over
one index, SIGTERM and SIGKILL landing after work was saved. Each ends with exactly the rows a
single clean run writes: nothing missing, nothing twice."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flows.ingest import ingest
from spotline.ingestion import pipeline as core
from spotline.resources import Resources
from spotline.settings import Settings
from tests.ingest.children import child_env, context, start_ingest
from tests.conftest import SAMPLE, CountingEmbedder, use_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

PREFIX = "corpus/help-centre/"
# A slice of the sample help centre (all formats, one file set aside) keeps each trial a few seconds.
SMALL = sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*") if p.is_file())[:10]


def seed(store: Path, names=None) -> None:
    dest = store / "corpus" / "help-centre"
    for name in names or sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*") if p.is_file()):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLE / name, dest / name)


def reset(tmp: Path) -> None:
    """Everything a run writes goes; the sources stay, with their versions (chunk ids hash their URIs)."""
    shutil.rmtree(tmp / "index", ignore_errors=True)
    shutil.rmtree(tmp / "store" / "_spotline", ignore_errors=True)


def clean_run(monkeypatch, tmp: Path, embedder, **env):
    """(rows, summary) of one uninterrupted run; then the index is wiped for the run under test."""
    res = use_settings(monkeypatch, tmp, **env)
    res.__dict__["_embedder"] = embedder
    summary = ingest(prefix=PREFIX)
    rows = res.index.all_records()
    reset(tmp)
    return rows, summary


def vectors_of(res) -> dict[str, np.ndarray]:
    rows = res.index.table.to_table(columns=["chunk_id", "vector"]).to_pylist()
    return {r["chunk_id"]: np.asarray(r["vector"]) for r in rows}


@pytest.mark.parametrize("runs", [2, 4])
def test_ingests_started_together_end_with_the_rows_of_one_clean_run(monkeypatch, tmp_path, prefect_api,
                                                                     shared_embedder, runs):
    seed(tmp_path / "store", SMALL)
    clean, first = clean_run(monkeypatch, tmp_path, shared_embedder)
    assert len(clean) > 20 and first.new >= 8

    env = child_env(tmp_path / "store", tmp_path / "index", prefect_api)
    start = context().Event()
    outs = [tmp_path / f"run-{i}.json" for i in range(runs)]
    procs = [start_ingest(env, {"prefix": PREFIX, "batch_documents": 3}, out, start) for out in outs]
    time.sleep(1.0)
    start.set()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    summaries = [json.loads(o.read_text()) for o in outs]

    res = use_settings(monkeypatch, tmp_path)
    rows = res.index.all_records()
    assert len(rows) == len({r["chunk_id"] for r in rows}), "no chunk stored twice"
    assert rows == clean
    # One writer per index: exactly one run did the work, the others planned after it and found it done.
    assert sorted(s["new"] for s in summaries) == [0] * (runs - 1) + [first.new]
    assert sorted(s["chunks_written"] for s in summaries) == [0] * (runs - 1) + [len(clean)]
    assert sum(1 for s in summaries if s["waited_for_writer_s"] > 0) >= runs - 1


def test_writers_racing_without_the_server_slot_still_write_each_chunk_once(monkeypatch, tmp_path, shared_embedder):
    """The index's own guard, without Prefect: four writers hit merge-insert at the same instant."""
    seed(tmp_path / "store", SMALL)
    clean, _ = clean_run(monkeypatch, tmp_path, shared_embedder)
    use_settings(monkeypatch, tmp_path)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            r = Resources(Settings())  # its own settings, index handle and connection, like another process
            r.__dict__["_embedder"] = shared_embedder
            real_upsert = r.index.upsert

            def upsert(records):
                barrier.wait(60)  # every writer decided "new" from the same version; now all write
                real_upsert(records)

            r.index.upsert = upsert
            plan = core.plan_sync(r, core.list_sources(r, PREFIX), r.store.uri(PREFIX), True)
            core.ingest_batch(r, plan.to_process, plan.states)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    rows = use_settings(monkeypatch, tmp_path).index.all_records()
    assert len(rows) == len({r["chunk_id"] for r in rows}) == len(clean)
    assert rows == clean


def test_a_run_finds_chunks_stored_twice_removes_them_and_reports_it(monkeypatch, tmp_path, shared_embedder):
    seed(tmp_path / "store", SMALL)
    clean, _ = clean_run(monkeypatch, tmp_path, shared_embedder)
    res = use_settings(monkeypatch, tmp_path)
    counting = res.__dict__["_embedder"] = CountingEmbedder(shared_embedder)
    ingest(prefix=PREFIX)
    table = res.index.table
    some = table.to_table(limit=7)  # what an unserialised race used to leave behind
    table.insert(some)
    assert res.index.count() == len(clean) + 7
    counting.reset()

    run = ingest(prefix=PREFIX)
    assert run.duplicates_removed == 7
    assert res.index.all_records() == clean
    assert counting.texts == [], "re-indexing the repaired documents reuses their cached embeddings"
    again = ingest(prefix=PREFIX)
    assert again.duplicates_removed == 0 and again.chunks_written == 0


def _wait_for(path: Path, pattern: str, count: int, proc, deadline: float) -> None:
    while len(list(path.rglob(pattern))) < count:
        assert proc.exitcode is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


@pytest.mark.timeout(1200)  # 20 trials of two runs each: ~3-5 min here, more on a loaded machine
def test_twenty_kills_at_batch_boundaries_then_a_rerun_equals_a_clean_run(monkeypatch, tmp_path, prefect_api,
                                                                          shared_embedder):
    """SIGTERM or SIGKILL, at a random batch boundary plus a random delay into the next batch;
    SIGTERM must end the process within 10 s. The re-run then leaves exactly the clean run's rows."""
    seed(tmp_path / "store", SMALL)
    res = use_settings(monkeypatch, tmp_path, SPOTLINE_INGEST__BATCH_DOCUMENTS="2")
    res.__dict__["_embedder"] = shared_embedder
    first = ingest(prefix=PREFIX)
    clean, clean_vectors = res.index.all_records(), vectors_of(res)
    reset(tmp_path)
    good = first.new
    env = child_env(tmp_path / "store", tmp_path / "index", prefect_api, SPOTLINE_INGEST__BATCH_DOCUMENTS="2")
    shards = tmp_path / "store" / "_spotline" / "cache" / "embeddings"
    rng = random.Random(20261201)
    # A document's shard is saved once its batch is embedded: an even count is a batch boundary.
    outcomes = []
    for trial in range(20):
        reset(tmp_path)
        boundary = rng.randrange(1, good // 2) * 2  # documents embedded at the end of a batch of two
        delay = rng.uniform(0.0, 0.6)
        sig = signal.SIGTERM if trial % 2 == 0 else signal.SIGKILL
        proc = start_ingest(env, {"prefix": PREFIX}, tmp_path / "killed.json")
        try:
            _wait_for(shards, "*.npz", boundary, proc, time.monotonic() + 180)
            time.sleep(delay)
            sent = time.monotonic()
            os.kill(proc.pid, sig)
            proc.join(30)
            took = time.monotonic() - sent
        finally:
            if proc.exitcode is None:
                proc.kill()
                proc.join(10)
        assert proc.exitcode is not None and proc.exitcode != 0, "the run was killed, not finished"
        if sig == signal.SIGTERM:
            assert took < 10, f"trial {trial}: SIGTERM took {took:.1f} s to end the process"
        saved = len(list(shards.rglob("*.npz")))

        res = use_settings(monkeypatch, tmp_path, SPOTLINE_INGEST__BATCH_DOCUMENTS="2")
        counting = res.__dict__["_embedder"] = CountingEmbedder(shared_embedder)
        rerun_started = time.monotonic()
        rerun = ingest(prefix=PREFIX)
        # A SIGKILLed run's slot is held by a lease of at least 60 s; the re-run sees its process is
        # gone and frees it instead of waiting that out.
        assert rerun.waited_for_writer_s < 30 and time.monotonic() - rerun_started < 60
        rows = res.index.all_records()
        assert rows == clean, f"trial {trial} ({sig.name} after {boundary} docs + {delay:.2f} s)"
        vectors = vectors_of(res)  # batches differ between runs (padding): float noise, nothing more
        assert vectors.keys() == clean_vectors.keys()
        assert all(np.allclose(vectors[i], clean_vectors[i], atol=1e-4) for i in clean_vectors)
        assert rerun.new + rerun.changed + rerun.unchanged == good
        outcomes.append((sig.name, boundary, saved, len(counting.texts), round(took, 2)))
    print("trials (signal, boundary, shards saved, texts re-embedded, seconds to exit):", outcomes)
    assert sum(1 for o in outcomes if o[3] < len(clean)) >= 15, "work saved before a kill is not redone"


@pytest.mark.timeout(900)  # cold processes that import torch for the pool, and a server's first start
def test_sigterm_to_the_cli_process_group_ends_everything_within_10_s_and_a_rerun_equals_a_clean_run(
        monkeypatch, tmp_path, shared_embedder):
    """What `docker stop` / a Spot reclaim does to `spotline ingest`: the CLI's whole process group gets
    SIGTERM while the embedding pool is busy (the project's Prefect server runs in its own session)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    seed(tmp_path / "store")
    clean, _ = clean_run(monkeypatch, tmp_path, shared_embedder)
    from deployments import devserver

    # No PREFECT_API_URL: the CLI starts the project's own server (here on a free port, under this
    # test's home), which outlives the CLI as it does for a user; the test stops it at the end.
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    home = tmp_path / "spotline-home"
    env.update(SPOTLINE_HOME=str(home), PREFECT_PORT=str(devserver.free_port()), PYTHONPATH=str(ROOT),
               SPOTLINE_STORE__ROOT=str(tmp_path / "store"), SPOTLINE_INDEX__PATH=str(tmp_path / "index"),
               SPOTLINE_INGEST__BATCH_DOCUMENTS="8", SPOTLINE_EMBEDDING__POOL_MIN_TEXTS="8",
               SPOTLINE_EMBEDDING__WORKERS="2")
    log = open(tmp_path / "cli.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", "--prefix", PREFIX], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    shards = tmp_path / "store" / "_spotline" / "cache" / "embeddings"
    try:
        deadline = time.monotonic() + 400  # the server's first start, torch import and the pool's start
        while len(list(shards.rglob("*.npz"))) < 8:
            assert proc.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        time.sleep(0.5)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert took < 10, f"SIGTERM took {took:.1f} s to end `spotline ingest`"
    gone = time.monotonic() + 15  # the pool's workers go too, not only the CLI
    while time.monotonic() < gone:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the killed group are still running 15 s later")

    # The same command again, on the same server: the killed run may have left the writer slot
    # held. The re-run must recognise its dead holder and free it, not wait for ever.
    try:
        rerun = subprocess.run([sys.executable, "-m", "cli.main", "ingest", "--prefix", PREFIX], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=400)
    finally:
        devserver.stop(home)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    print("re-run after SIGTERM:", [line for line in rerun.stderr.splitlines() if "writer slot" in line])
    assert use_settings(monkeypatch, tmp_path).index.all_records() == clean
