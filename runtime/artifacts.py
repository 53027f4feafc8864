"""Artifacts every flow shows in the Prefect UI: live progress, a summary table, set-aside inputs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


class Progress:
    """A progress artifact that moves as batches finish."""

    def __init__(self, total: int, what: str):
        self.total, self.done, self.what = max(total, 0), 0, what
        self.id: UUID = create_progress_artifact(
            progress=0.0 if total else 100.0, description=f"{what}: 0 / {total}"
        )

    def advance(self, n: int) -> None:
        self.done += n
        pct = 100.0 * self.done / self.total if self.total else 100.0
        update_progress_artifact(self.id, progress=pct, description=f"{self.what}: {self.done} / {self.total}")


def summary_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(key=key, table=rows, description=description)


def set_aside_table(key: str, rows: list[dict[str, Any]], what: str) -> None:
    """Every input set aside, with its reason. An empty list still writes 'none' so the UI is explicit."""
    if rows:
        create_table_artifact(key=key, table=rows, description=f"{len(rows)} {what} set aside, with reasons")
    else:
        create_markdown_artifact(key=key, markdown=f"No {what} were set aside in this run.", description=f"{what} set aside")
