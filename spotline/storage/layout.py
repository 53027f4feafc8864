"""Where Spotline keeps its own objects inside the object store: one spelling of every prefix.

Everything lives under the system prefix (``_spotline/`` by default), which ingestion refuses to
read and uploads refuse to write, so caches, records and datasets are never mistaken for
documents. A new pipeline adds its prefix here, not in its own module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    system: str = "_spotline/"

    def __post_init__(self) -> None:
        if not self.system.endswith("/"):
            object.__setattr__(self, "system", self.system + "/")

    @property
    def embedding_cache(self) -> str:
        """One shard per (model, source document): vectors reused across runs and versions."""
        return f"{self.system}cache/embeddings/"

    @property
    def llm_cache(self) -> str:
        """The gateway's response cache, shared by every worker."""
        return f"{self.system}cache/llm/"

    def quarantine(self, index: str) -> str:
        """Records of documents set aside while ingesting into ``index`` (reason, run, when)."""
        return f"{self.system}quarantine/{index}/"

    @property
    def prefect_results(self) -> str:
        """Prefect task and flow results: what lets a resumed run skip finished work."""
        return f"{self.system}prefect-results/"

    @property
    def datasets(self) -> str:
        """Versioned datasets (spotline.storage.datasets): ``<name>/version=<v>/`` plus ``<name>/latest.json``."""
        return f"{self.system}datasets/"

    def drain_watermark(self, index: str) -> str:
        """How far ingest-on-upload has drained object events into ``index`` (runtime/drain.py)."""
        return f"{self.system}drain/{index}.json"

    def checkpoints(self, job: str) -> str:
        """Training checkpoints of one job (streamed files, multipart on S3)."""
        return f"{self.system}checkpoints/{job}/"

    @property
    def models(self) -> str:
        """Model files a pipeline produced (adapters, promoted candidates)."""
        return f"{self.system}models/"

    def swarm_run(self, run_key: str) -> str:
        """One swarm run: each shard's prompts, exchanges and grades, and the run's failures."""
        return f"{self.system}swarm/runs/{run_key}/"

    @property
    def judge_calibrations(self) -> str:
        """The last calibration of each judge route (spotline.swarm.judge): gating or advisory."""
        return f"{self.system}swarm/judge-calibration/"

    def owns(self, key: str) -> bool:
        """True for any key under the system prefix (or the prefix itself)."""
        return key.startswith(self.system) or key.rstrip("/") + "/" == self.system
