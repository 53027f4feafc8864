"""The model registry: versions with manifests, two aliases that move atomically, and the history of
every move, all in the object store.

    _spotline/models/versions/<version>/adapter.safetensors, adapter.gguf   (files first)
    _spotline/models/versions/<version>/manifest.json                      (then the manifest: create-only)
    _spotline/models/aliases.json                                          (aliases + their history)

A version is immutable: its manifest is written with a create-only conditional write, after its
files, and names each file with its SHA-256. The aliases (``champion``, ``candidate``) and their
append-only history live in ONE document updated with compare-and-swap (If-Match on S3, a locked
compare-and-rename locally): moving an alias and recording why is a single atomic write, so the
history can never disagree with the aliases, and two promoters cannot lose each other's move.

Rollback reads the history as a stack per alias (each promotion pushes, each rollback pops), so
rolling back twice goes back two versions, never back and forth between the same two.

The base model is a version too (``base``, no adapter): the first champion, and what a rollback of
the first fine-tune returns to.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from spotline.errors import PermanentError
from spotline.hashing import sha256_file
from spotline.storage.base import ObjectNotFound, ObjectStore, VersionConflict

ALIASES = ("champion", "candidate")
CAS_ATTEMPTS = 8
BASE_VERSION = "base"


class RegistryError(PermanentError):
    """A registry request that cannot be met (unknown version, nothing to roll back to)."""


class ModelVersion(BaseModel):
    version: str
    base: str = Field(description="the base model the adapter applies to (name and GGUF sha256)")
    files: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> {key, sha256, bytes}")
    dataset: dict[str, Any] = Field(default_factory=dict, description="training data: name, version, content hash")
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="config, steps, loss, resumes")
    parent: str | None = None
    created_at: str = ""
    producer: str = ""

    def has(self, name: str) -> bool:
        return name in self.files


class AliasMove(BaseModel):
    at: str
    alias: str
    action: Literal["promote", "rollback", "set"]
    from_version: str | None
    to_version: str
    reason: str
    actor: str = ""


class AliasDoc(BaseModel):
    aliases: dict[str, str] = Field(default_factory=dict)
    history: list[AliasMove] = Field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Registry:
    def __init__(self, store: ObjectStore, prefix: str):
        self.store, self.prefix = store, prefix if prefix.endswith("/") else prefix + "/"

    # --- versions ------------------------------------------------------------------------------
    def _version_dir(self, version: str) -> str:
        return f"{self.prefix}versions/{version}/"

    def register(self, entry: ModelVersion, files: dict[str, Path] | None = None) -> ModelVersion:
        """Upload the files, then write the manifest (create-only: a version is never rewritten)."""
        if not entry.version or "/" in entry.version or entry.version.startswith("."):
            raise RegistryError(f"bad version name {entry.version!r}")
        if self.store.head(self._version_dir(entry.version) + "manifest.json") is not None:
            raise RegistryError(f"version {entry.version} already exists: versions are immutable")
        listed = {}
        for name, path in (files or {}).items():
            key = self._version_dir(entry.version) + name
            digest = sha256_file(path)
            self.store.put_file(key, path)
            listed[name] = {"key": key, "sha256": digest, "bytes": path.stat().st_size}
        entry = entry.model_copy(update={"files": listed, "created_at": entry.created_at or _now()})
        try:
            self.store.put_if(self._version_dir(entry.version) + "manifest.json",
                              entry.model_dump_json(indent=2).encode(), None, "application/json")
        except VersionConflict:
            raise RegistryError(f"version {entry.version} was registered concurrently") from None
        return entry

    def get(self, version: str) -> ModelVersion:
        try:
            return ModelVersion.model_validate_json(self.store.get(self._version_dir(version) + "manifest.json"))
        except ObjectNotFound:
            raise RegistryError(f"no model version {version!r}") from None

    def versions(self) -> list[ModelVersion]:
        found = [o.key for o in self.store.list(f"{self.prefix}versions/") if o.key.endswith("/manifest.json")]
        return sorted((ModelVersion.model_validate_json(self.store.get(k)) for k in found), key=lambda v: v.created_at)

    def fetch(self, version: ModelVersion, name: str, into: Path) -> Path:
        """Download one file of a version (checked against its manifest hash), reusing a verified copy."""
        f = version.files.get(name)
        if f is None:
            raise RegistryError(f"version {version.version} has no {name}")
        if into.is_file() and into.stat().st_size == f["bytes"] and sha256_file(into) == f["sha256"]:
            return into
        into.parent.mkdir(parents=True, exist_ok=True)
        self.store.get_file(f["key"], into)
        if sha256_file(into) != f["sha256"]:
            into.unlink(missing_ok=True)
            raise RegistryError(f"{f['key']} does not match the sha256 in version {version.version}'s manifest")
        return into

    def record_evaluation(self, version: str, evaluation: dict[str, Any]) -> None:
        """The gate's verdict on a version (metrics side by side, decision, reason), kept beside its
        immutable manifest: evaluated later than registered, and re-evaluated by a resumed run."""
        self.get(version)
        self.store.put(self._version_dir(version) + "evaluation.json",
                       json.dumps(evaluation, indent=2, default=str).encode(), "application/json")

    def evaluation(self, version: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get(self._version_dir(version) + "evaluation.json"))
        except ObjectNotFound:
            return None

    # --- aliases -------------------------------------------------------------------------------
    @property
    def _aliases_key(self) -> str:
        return f"{self.prefix}aliases.json"

    def _read(self) -> tuple[AliasDoc, str | None]:
        head = self.store.head(self._aliases_key)
        if head is None:
            return AliasDoc(), None
        return AliasDoc.model_validate_json(self.store.get(self._aliases_key)), head.version

    def aliases(self) -> AliasDoc:
        return self._read()[0]

    def resolve(self, alias: str) -> ModelVersion | None:
        version = self.aliases().aliases.get(alias)
        return self.get(version) if version else None

    def move(self, alias: str, to_version: str, reason: str, action: str = "promote", actor: str = "") -> AliasMove:
        """Point ``alias`` at ``to_version`` and record the move, in one conditional write."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r} (known: {', '.join(ALIASES)})")
        self.get(to_version)  # only a registered version can be pointed at
        for _ in range(CAS_ATTEMPTS):
            doc, etag = self._read()
            move = AliasMove(at=_now(), alias=alias, action=action, from_version=doc.aliases.get(alias),
                             to_version=to_version, reason=reason, actor=actor)
            doc.aliases[alias] = to_version
            doc.history.append(move)
            try:
                self.store.put_if(self._aliases_key, doc.model_dump_json(indent=2).encode(), etag, "application/json")
                return move
            except VersionConflict:
                continue  # another move landed first: re-read and apply ours on top
        raise VersionConflict(self._aliases_key, None)

    def tenure(self, alias: str) -> list[str]:
        """The alias's versions as a stack: each promotion pushes, each rollback pops."""
        stack: list[str] = []
        for m in self.aliases().history:
            if m.alias != alias:
                continue
            if m.action == "rollback" and stack:
                stack.pop()
            elif m.action != "rollback":
                stack.append(m.to_version)
        return stack

    def rollback(self, alias: str = "champion", reason: str = "manual rollback", actor: str = "") -> AliasMove:
        stack = self.tenure(alias)
        if len(stack) < 2:
            raise RegistryError(f"{alias} has no earlier version to roll back to")
        return self.move(alias, stack[-2], reason, action="rollback", actor=actor)

    def ensure_base(self, base: str, producer: str = "") -> ModelVersion:
        """Register the base model as version ``base`` and make it champion, once."""
        try:
            entry = self.get(BASE_VERSION)
        except RegistryError:
            try:
                entry = self.register(ModelVersion(version=BASE_VERSION, base=base, producer=producer))
            except RegistryError:  # registered by someone else meanwhile
                entry = self.get(BASE_VERSION)
        if "champion" not in self.aliases().aliases:
            self.move("champion", BASE_VERSION, "the base model is the first champion", action="set", actor=producer)
        return entry


def history_rows(doc: AliasDoc, limit: int = 20) -> list[dict[str, Any]]:
    return [json.loads(m.model_dump_json()) for m in doc.history[-limit:]][::-1]
