"""The local embedder's process pool: same vectors as in-process, survives a dead worker, never
outlives its parent. Real model, real processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spotline.embedding.base import EmbeddingUnavailable
from spotline.embedding.local import LocalEmbedder, available_cpus
from spotline.settings import EmbeddingSettings
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Lengths from a few words to a full chunk, so jobs are sorted and padded differently than in-process.
TEXTS = [f"Invoice export {i}: " + " ".join(["the ledger syncs nightly with QuickBooks"] * (1 + i % 23))
         for i in range(150)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "100000 100000\n"}, 1),  # cgroup v2, 1 CPU
        ({"cpu.max": "150000 100000\n"}, 1),  # 1.5 CPUs: whole workers only
        ({"cpu.max": "max 100000\n"}, None),  # no quota: the affinity mask decides
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_available_cpus_reads_the_container_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (min(expected, affinity) if expected else affinity)


def test_pool_matches_in_process_then_recovers_from_a_dead_worker(shared_embedder):
    pooled = LocalEmbedder(EmbeddingSettings(kind="local", workers=2, pool_min_texts=100))
    try:
        expected = shared_embedder.model.encode(TEXTS, 64)
        got = pooled.embed(TEXTS)
        assert pooled._pool is not None, "150 texts >= pool_min_texts must go to the pool"
        assert got.vectors.shape == (150, shared_embedder.dimension) and got.vectors.dtype == np.float32
        assert np.allclose(got.vectors, expected, atol=1e-5), "same vectors, same order as in-process"
        assert got.usage.texts == 150 and got.usage.requests == 3

        small = pooled.embed(TEXTS[:5])  # below pool_min_texts: in-process
        assert np.allclose(small.vectors, expected[:5], atol=1e-5)

        victim = next(iter(pooled._pool._processes))
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(EmbeddingUnavailable, match="worker process died"):
            for _ in range(20):  # the executor notices the death on its next round trip
                pooled.embed(TEXTS)
                time.sleep(0.2)
        assert pooled._pool is None

        again = pooled.embed(TEXTS)  # a fresh pool: the task-level retry succeeds
        assert np.allclose(again.vectors, expected, atol=1e-5)

        # Closing the pool under a running call is a transient failure for that call, not a hang.
        import threading

        closer = threading.Timer(0.5, pooled.close)
        closer.start()
        with pytest.raises(EmbeddingUnavailable, match="shut down during the call"):
            pooled.embed(TEXTS * 4)
        closer.join()
    finally:
        pooled.close()


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = (
        "from spotline.embedding.local import LocalEmbedder\n"
        "from spotline.settings import EmbeddingSettings\n"
        "if __name__ == '__main__':\n"
        "    e = LocalEmbedder(EmbeddingSettings(kind='local', workers=2))\n"
        "    print(*e.start_pool()._processes, flush=True)\n"
        "    import time; time.sleep(600)\n"
    )
    path = tmp_path / "owner.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        assert ready, "the pool did not start within 180 s"
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(p) for p in workers)
        proc.kill()  # the parent only, as an OOM kill would: not its process group
        proc.wait(10)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in workers), "orphaned embedding workers"
    finally:
        proc.kill()
