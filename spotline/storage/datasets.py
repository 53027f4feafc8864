"""Versioned datasets every pipeline shares: parts, a manifest, and a ``latest`` pointer written last.

A pipeline (the nightly persona suite, swarm results, fine-tuning sets) publishes a dataset as

    _spotline/datasets/<name>/version=<version>/part-00000-<write>.parquet ...
    _spotline/datasets/<name>/version=<version>/manifest.json   (parts, row counts, hashes, producer, code)
    _spotline/datasets/<name>/latest.json                       (which version, which manifest)

in that order. A reader starts from ``latest.json`` (or a named version's manifest) and reads
only the parts the manifest lists, checking each hash, so it never sees half a dataset: parts
that are still being written are not listed anywhere yet. The pointer is a conditional write
(If-Match on S3, a locked compare-and-rename locally), so two publishers cannot lose each
other's update, and it only moves forward: backfilling an older version leaves it alone.
Re-running the same version replaces it: new parts under a new write id, then the manifest,
then the pointer, and only then are the previous write's parts deleted.

Shape borrowed from PrefectHQ/examples: a timestamped snapshot plus a ``latest`` pointer.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid
from datetime import datetime, timezone
from typing import Iterable

import pandas as pd
from pydantic import BaseModel

from spotline.errors import PermanentError
from spotline.hashing import sha256_hex
from spotline.storage.base import ObjectNotFound, ObjectStore, VersionConflict
from spotline.storage.layout import Layout

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
POINTER_ATTEMPTS = 5


class DatasetCorrupt(PermanentError):
    """A part is missing or its bytes do not match the manifest: the dataset must be republished."""


class PartInfo(BaseModel):
    key: str
    table: str = ""  # a version may hold several tables (personas + prompts): parts say which
    rows: int
    bytes: int
    sha256: str


class Manifest(BaseModel):
    name: str
    version: str
    write_id: str
    created_at: str
    producer: str  # e.g. "flow ingest-documents, run 7f3c..." : who to ask about this data
    code_version: str
    rows: int
    content_hash: str  # over the parts' hashes in order: equal data, equal hash, whatever the write
    parts: list[PartInfo]
    extra: dict = {}


class Pointer(BaseModel):
    name: str
    version: str
    manifest: str
    content_hash: str
    published_at: str


def code_version() -> str:
    """What produced the data: $SPOTLINE_CODE_VERSION (set in images), else the git commit, else 'unknown'."""
    if os.environ.get("SPOTLINE_CODE_VERSION"):
        return os.environ["SPOTLINE_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__))
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _check_name(what: str, value: str) -> None:
    if not value or not set(value) <= _SAFE or value.startswith("."):
        raise ValueError(f"dataset {what} {value!r} may use only letters, digits, '-', '_' and '.'")


class Datasets:
    def __init__(self, store: ObjectStore, layout: Layout):
        self.store, self.root = store, layout.datasets

    def _dir(self, name: str, version: str) -> str:
        return f"{self.root}{name}/version={version}/"

    def _pointer_key(self, name: str) -> str:
        return f"{self.root}{name}/latest.json"

    def publish(
        self, name: str, version: str, parts: Iterable[pd.DataFrame] | dict[str, Iterable[pd.DataFrame]],
        producer: str, code: str | None = None, extra: dict | None = None, fmt: str = "parquet",
    ) -> Manifest:
        """Write the parts, then the manifest, then move ``latest`` (forward only); returns the manifest.

        `parts` is one table's frames, or {table: frames} for a version of several tables that must
        appear together. `fmt` is parquet, or jsonl (one JSON object per line, keys sorted: the same
        rows give the same bytes, so the content hash says whether two runs made the same data).
        """
        _check_name("name", name)
        _check_name("version", version)
        if fmt not in ("parquet", "jsonl"):
            raise ValueError(f"dataset format {fmt!r}: parquet or jsonl")
        tables = parts if isinstance(parts, dict) else {"": parts}
        write_id = uuid.uuid4().hex[:12]
        folder = self._dir(name, version)
        infos = []
        for table, frames in tables.items():
            if table:
                _check_name("table", table)
            for i, frame in enumerate(frames):
                data = _encode(frame, fmt)
                key = f"{folder}{table or 'part'}-{i:05d}-{write_id}.{fmt}"
                self.store.put(key, data, _CONTENT_TYPES[fmt])
                infos.append(PartInfo(key=key, table=table, rows=len(frame), bytes=len(data), sha256=sha256_hex(data)))
        manifest = Manifest(
            name=name, version=version, write_id=write_id, created_at=_now(), producer=producer,
            code_version=code or code_version(), rows=sum(p.rows for p in infos),
            content_hash=sha256_hex("\n".join(f"{p.table}:{p.sha256}" if p.table else p.sha256 for p in infos)),
            parts=infos, extra=extra or {},
        )
        self.store.put(f"{folder}manifest.json", manifest.model_dump_json(indent=2).encode(), "application/json")
        self._move_pointer(manifest)
        # Only now is the previous write of this version unreachable: remove its parts.
        listed = {p.key for p in infos}
        for obj in self.store.list(folder):
            if not obj.key.endswith("/manifest.json") and obj.key not in listed:
                self.store.delete(obj.key)
        return manifest

    def _move_pointer(self, manifest: Manifest) -> None:
        key = self._pointer_key(manifest.name)
        pointer = Pointer(name=manifest.name, version=manifest.version, manifest=f"{self._dir(manifest.name, manifest.version)}manifest.json",
                          content_hash=manifest.content_hash, published_at=_now())
        for _ in range(POINTER_ATTEMPTS):
            head = self.store.head(key)
            if head is not None:
                current = Pointer.model_validate_json(self.store.get(key))
                if current.version > manifest.version:  # a backfill: latest stays where it is
                    return
            try:
                self.store.put_if(key, pointer.model_dump_json(indent=2).encode(), head.version if head else None,
                                  "application/json")
                return
            except VersionConflict:
                continue  # another publisher moved it: look again
        raise VersionConflict(key, None)

    def latest(self, name: str) -> Pointer | None:
        try:
            return Pointer.model_validate_json(self.store.get(self._pointer_key(name)))
        except ObjectNotFound:
            return None

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        if version is None:
            pointer = self.latest(name)
            if pointer is None:
                raise ObjectNotFound(self._pointer_key(name))
            key = pointer.manifest
        else:
            key = f"{self._dir(name, version)}manifest.json"
        return Manifest.model_validate_json(self.store.get(key))

    def read(self, name: str, version: str | None = None, table: str | None = None) -> pd.DataFrame:
        """One table of the dataset as one frame (latest by default), every part checked against the manifest."""
        manifest = self.manifest(name, version)
        frames = []
        for part in manifest.parts:
            if table is not None and part.table != table:
                continue
            try:
                data = self.store.get(part.key)
            except ObjectNotFound:
                raise DatasetCorrupt(f"{name} version {manifest.version}: part {part.key} is missing") from None
            if sha256_hex(data) != part.sha256:
                raise DatasetCorrupt(f"{name} version {manifest.version}: part {part.key} does not match its hash")
            frames.append(pd.read_json(io.BytesIO(data), lines=True, dtype=False) if part.key.endswith(".jsonl")
                          else pd.read_parquet(io.BytesIO(data)))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def versions(self, name: str) -> list[str]:
        found = set()
        for obj in self.store.list(f"{self.root}{name}/version="):
            if obj.key.endswith("/manifest.json"):
                found.add(obj.key.split("/version=", 1)[1].split("/", 1)[0])
        return sorted(found)


_CONTENT_TYPES = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson"}


def _encode(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str) + "\n"
                   for row in frame.to_dict(orient="records")).encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
