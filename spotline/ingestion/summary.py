"""What an ingest run did, tallied from its plan and batch reports, and the rows its table shows.

Kept out of the flow so the flow body reads as its story; costs live in the run report
(runtime.report), which every flow shares.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from spotline.ingestion.pipeline import BatchReport, SyncPlan, Usage

PLAIN_ENCODINGS = ("utf-8", "utf-8-sig", "ascii")


class IngestSummary(BaseModel):
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks_embedded: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    embedding_texts: int = 0
    embedding_tokens: int = 0
    index_chunks: int = 0
    duplicates_removed: int = 0
    waited_for_writer_s: float = 0.0
    seconds: float = 0.0
    set_aside: list[dict[str, Any]] = []
    legacy_encodings: list[dict[str, str]] = []

    @classmethod
    def planned(cls, sources: int, plan: SyncPlan) -> "IngestSummary":
        return cls(scanned=sources, unchanged=len(plan.unchanged), duplicates_removed=plan.duplicates_removed)

    def add_batch(self, report: BatchReport, usage: Usage) -> None:
        """Count one batch's outcomes into the summary and its embedding usage into ``usage``."""
        for o in report.outcomes:
            setattr(self, o.status, getattr(self, o.status) + 1)
            self.chunks_embedded += o.chunks_embedded
            if o.status == "failed":
                self.set_aside.append({"key": o.key, "reason": o.reason, "detail": o.detail})
            elif o.encoding and o.encoding not in PLAIN_ENCODINGS:
                self.legacy_encodings.append({"key": o.key, "encoding": o.encoding})
        self.chunks_written += report.chunks_written
        self.chunks_deleted += report.chunks_deleted
        usage.add(report.usage)
        self.embedding_texts, self.embedding_tokens = usage.texts, usage.input_tokens

    @property
    def touched_index(self) -> bool:
        return bool(self.chunks_written or self.chunks_deleted or self.deleted or self.duplicates_removed)

    def rows(self, usage: Usage) -> list[dict[str, Any]]:
        return [
            {"metric": "documents scanned", "value": self.scanned},
            {"metric": "new", "value": self.new},
            {"metric": "changed", "value": self.changed},
            {"metric": "unchanged", "value": self.unchanged},
            {"metric": "deleted", "value": self.deleted},
            {"metric": "failed (set aside)", "value": self.failed},
            {"metric": "chunks embedded", "value": self.chunks_embedded},
            {"metric": "chunks written / deleted", "value": f"{self.chunks_written} / {self.chunks_deleted}"},
            {"metric": "chunks in index", "value": self.index_chunks},
            {"metric": "duplicate chunk rows repaired", "value": self.duplicates_removed},
            {"metric": "decoded from a legacy encoding", "value": len(self.legacy_encodings)},
            {"metric": "waited for the index writer slot (s)", "value": self.waited_for_writer_s},
            {"metric": "embedding requests", "value": usage.requests},
            {"metric": "tokens embedded", "value": usage.input_tokens},
            {"metric": "throttled requests", "value": usage.throttled},
            {"metric": "wall time (s)", "value": self.seconds},
        ]
