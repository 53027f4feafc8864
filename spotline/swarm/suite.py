"""The prompts a swarm fires: a persona dataset version, or the committed fallback suite.

Why ids are content hashes: a shard that resumes, a re-run of the same version and a reviewer's
false-positive label must all name the same prompt, whatever order it was read in.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spotline.errors import PermanentError

TIERS = ("smoke", "full")


class SuiteUnavailable(PermanentError):
    """No suite to fire: the named dataset version does not exist, or it holds no usable prompt."""


@dataclass(frozen=True)
class SuiteItem:
    id: str
    category: str
    turns: tuple[str, ...]
    persona_id: str = ""
    origin: str = ""

    @property
    def text(self) -> str:
        return "\n".join(self.turns)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["turns"] = list(self.turns)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SuiteItem":
        return cls(d["id"], d["category"], tuple(d["turns"]), d.get("persona_id", ""), d.get("origin", ""))


def item_of(row: dict[str, Any]) -> SuiteItem:
    """A persona-suite row (persona_id, category, text, turns, origin) as a swarm item."""
    turns = row.get("turns") or [row["text"]]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise ValueError("turns must be a non-empty list of non-empty strings")
    if not isinstance(row.get("category"), str):
        raise ValueError("category missing")
    digest = hashlib.sha256(json.dumps([row["category"], turns], ensure_ascii=False).encode()).hexdigest()[:16]
    return SuiteItem(digest, row["category"], tuple(turns), str(row.get("persona_id", "")), str(row.get("origin", "")))


@dataclass
class Suite:
    source: str  # "personas@2026-11-30" or the fallback file
    items: list[SuiteItem]
    set_aside: list[dict[str, Any]] = field(default_factory=list)  # rows that could not be used, with the reason


def from_rows(source: str, rows: list[dict[str, Any]]) -> Suite:
    items: dict[str, SuiteItem] = {}
    set_aside = []
    for n, row in enumerate(rows):
        try:
            it = item_of(row)
        except (KeyError, ValueError, TypeError) as exc:
            set_aside.append({"row": n, "reason": str(exc) or type(exc).__name__})
            continue
        items.setdefault(it.id, it)  # the same prompt twice is fired once
    if not items:
        raise SuiteUnavailable(f"{source}: no usable prompt ({len(set_aside)} row(s) set aside)")
    return Suite(source, list(items.values()), set_aside)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append({})  # set aside by from_rows with its row number
    return rows


def tier_for(tier: str, branch: str | None, release_branches: tuple[str, ...] = ("main", "master")) -> str:
    """``auto`` resolves by branch: everything for a release branch, a smoke sample for the rest."""
    if tier == "auto":
        return "full" if branch in release_branches else "smoke"
    if tier not in TIERS:
        raise ValueError(f"tier must be auto or one of {TIERS}, not {tier!r}")
    return tier


def choose(items: list[SuiteItem], tier: str, size: int, seed: int) -> list[SuiteItem]:
    """``full``: everything; ``smoke``: a seeded sample of ``size``, spread over the categories
    (round robin through each category's shuffled prompts) so a small run still sees every kind."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, not {tier!r}")
    ordered = sorted(items, key=lambda i: i.id)
    if tier == "full" or size >= len(ordered):
        return ordered
    rng = random.Random(seed)
    by_category: dict[str, list[SuiteItem]] = {}
    for it in ordered:
        by_category.setdefault(it.category, []).append(it)
    for group in by_category.values():
        rng.shuffle(group)
    picked: list[SuiteItem] = []
    while len(picked) < size:
        for cat in sorted(by_category):
            if by_category[cat] and len(picked) < size:
                picked.append(by_category[cat].pop())
    return picked


def shards(items: list[SuiteItem], size: int) -> list[list[SuiteItem]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
