"""A run killed mid-batch (SIGKILL, as a Spot reclaim past its grace period would), then re-run,
ends with exactly the index a clean run produces: nothing missing, nothing duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from flows.ingest import ingest
from tests.conftest import ROOT, SAMPLE, CountingEmbedder, use_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def vectors_of(res) -> dict[str, np.ndarray]:
    rows = res.index.table.to_lance().to_table(columns=["chunk_id", "vector"]).to_pylist()
    return {r["chunk_id"]: np.asarray(r["vector"]) for r in rows}


def test_killed_run_then_rerun_equals_clean_run(monkeypatch, tmp_path, prefect_api, shared_embedder):
    # Chunk ids hash the absolute source URI: both runs use the same folder, clean run first.
    shutil.copytree(SAMPLE, tmp_path / "store" / "corpus" / "help-centre")
    res = use_settings(monkeypatch, tmp_path, SPOTLINE_INGEST__BATCH_DOCUMENTS="4")
    res.__dict__["_embedder"] = shared_embedder
    ingest(prefix="corpus/help-centre/")
    clean = res.index.all_records()
    assert len(clean) > 100
    clean_vectors = vectors_of(res)
    shutil.rmtree(tmp_path / "index")
    shutil.rmtree(tmp_path / "store" / "_spotline")

    env = {**os.environ, "PREFECT_API_URL": prefect_api, "SPOTLINE_STORE__ROOT": str(tmp_path / "store"),
           "SPOTLINE_INDEX__PATH": str(tmp_path / "index"), "SPOTLINE_INGEST__BATCH_DOCUMENTS": "4",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.ingest import ingest; ingest(prefix='corpus/help-centre/')"],
        env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    shards = tmp_path / "store" / "_spotline" / "cache" / "embeddings"
    deadline = time.monotonic() + 240
    try:
        # Kill once a few batches are done but well before the end (58 documents in 15 batches).
        while len(list(shards.rglob("*.npz"))) < 14:
            assert proc.poll() is None, "the run finished before it could be killed; use a bigger corpus"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before_kill = len(list(shards.rglob("*.npz")))
    assert 0 < done_before_kill < 50

    res = use_settings(monkeypatch, tmp_path, SPOTLINE_INGEST__BATCH_DOCUMENTS="4")
    counting = res.__dict__["_embedder"] = CountingEmbedder(shared_embedder)
    rerun = ingest(prefix="corpus/help-centre/")
    assert rerun.failed == 8 and rerun.new + rerun.unchanged + rerun.changed == 50
    assert rerun.unchanged > 0, "documents finished before the kill are not redone"
    resumed = res.index.all_records()

    assert len(resumed) == len({r["chunk_id"] for r in resumed}), "no duplicate chunks"
    assert resumed == clean, "same chunks, ids, texts, positions and versions as the clean run"
    assert len(counting.texts) < len(clean), "documents embedded before the kill were not embedded again"
    vectors = vectors_of(res)
    assert set(vectors) == set(clean_vectors)
    # Batches differ between the two runs (padding), so allow float noise, nothing more.
    assert all(np.allclose(vectors[i], clean_vectors[i], atol=1e-4) for i in clean_vectors)
