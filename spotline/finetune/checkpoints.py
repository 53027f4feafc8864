"""Training checkpoints in the object store that are either whole or ignored.

A Spot task can die at any instruction, including halfway through uploading a checkpoint. So a
checkpoint is written in two phases:

    <prefix>files/<write_id>/adapter.safetensors, state.pt     (uploaded first, under a fresh id)
    <prefix>step-00000040.json                                (the commit: written last)

The commit names every file with its size and SHA-256. A reader lists the commits, newest step
first, and takes the first one whose files are all present with the right hashes; files without
a commit (an upload that was killed) are never read, and are cleaned up by the next commit. Only
the last ``keep`` commits are kept: each new commit deletes older commits first (so no commit
ever names a deleted file) and then the files no commit names.

One trainer writes one job's checkpoints at a time (the flow run owns its job key); two writers
would not corrupt anything, since every write has its own id, but they would race on `keep`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spotline.errors import PermanentError
from spotline.hashing import sha256_file
from spotline.storage.base import ObjectNotFound, ObjectStore

_COMMIT = "step-"


class CheckpointMismatch(PermanentError):
    """A committed checkpoint belongs to another dataset or configuration: resuming it would train
    something else than was asked. Start a new job key (or delete the old checkpoints)."""


@dataclass(frozen=True)
class Committed:
    step: int
    key: str  # the commit's key
    files: dict[str, dict[str, Any]]  # name -> {key, sha256, bytes}
    meta: dict[str, Any]


class CheckpointStore:
    def __init__(self, store: ObjectStore, prefix: str, keep: int = 3):
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.store, self.prefix, self.keep = store, prefix if prefix.endswith("/") else prefix + "/", keep

    def _commit_key(self, step: int) -> str:
        return f"{self.prefix}{_COMMIT}{step:08d}.json"

    def commits(self) -> list[Committed]:
        """Every commit, newest step first (not verified: see :meth:`latest`)."""
        found = []
        for obj in self.store.list(self.prefix + _COMMIT):
            try:
                doc = json.loads(self.store.get(obj.key))
                found.append(Committed(int(doc["step"]), obj.key, doc["files"], doc.get("meta", {})))
            except (ObjectNotFound, ValueError, KeyError, TypeError):
                continue  # removed while listing, or not one of ours: never a resume point
        return sorted(found, key=lambda c: c.step, reverse=True)

    def save(self, step: int, folder: Path, meta: dict[str, Any]) -> Committed:
        """Upload every file of ``folder`` under a fresh id, then commit; then prune. Returns the commit."""
        write_id = uuid.uuid4().hex[:12]
        files = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            key = f"{self.prefix}files/{write_id}/{path.name}"
            digest = sha256_file(path)  # hashed before upload: what the commit promises is what was meant
            self.store.put_file(key, path)
            files[path.name] = {"key": key, "sha256": digest, "bytes": path.stat().st_size}
        doc = {"step": step, "files": files, "meta": meta,
               "committed_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        key = self._commit_key(step)
        self.store.put(key, json.dumps(doc, indent=2, sort_keys=True).encode(), "application/json")
        self._prune()
        return Committed(step, key, files, meta)

    def latest(self, into: Path) -> Committed | None:
        """Download the newest whole checkpoint into ``into`` (emptied first); None if there is none.
        A commit whose files are missing or differ from their hashes is skipped for an older one."""
        for commit in self.commits():
            if into.exists():
                shutil.rmtree(into)
            into.mkdir(parents=True)
            if self._fetch(commit, into):
                return commit
        if into.exists():
            shutil.rmtree(into)
        return None

    def _fetch(self, commit: Committed, into: Path) -> bool:
        for name, f in commit.files.items():
            if "/" in name or name.startswith("."):
                return False
            target = into / name
            try:
                self.store.get_file(f["key"], target)
            except ObjectNotFound:
                return False
            if target.stat().st_size != f["bytes"] or sha256_file(target) != f["sha256"]:
                return False
        return True

    def _prune(self) -> None:
        commits = self.commits()
        for old in commits[self.keep:]:
            self.store.delete(old.key)  # the commit goes first: no commit ever names a deleted file
        named = {f["key"] for c in commits[: self.keep] for f in c.files.values()}
        for obj in self.store.list(f"{self.prefix}files/"):
            if obj.key not in named:  # an older checkpoint's files, or an upload killed before its commit
                self.store.delete(obj.key)

    def clear(self) -> None:
        for obj in list(self.store.list(self.prefix)):
            self.store.delete(obj.key)


def scratch_dir(prefix: str = "spotline-ckpt-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
