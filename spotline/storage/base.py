"""The object store contract: a flat key space with prefixes, like S3."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

from pydantic import BaseModel, ConfigDict, Field

from spotline.errors import PermanentError, TransientError


class ObjectInfo(BaseModel):
    """One object in the object store, as a listing sees it (no content read)."""

    model_config = ConfigDict(frozen=True)

    key: str
    uri: str
    size: int
    version: str = Field(description="ETag (S3) or size+mtime stamp (local): changes whenever the content may have")
    # A listing can name an entry it refuses to read (a symlink leaving the local store's root, a
    # FIFO): the run sets it aside with this reason instead of silently skipping or following it.
    set_aside_reason: str | None = None
    set_aside_detail: str | None = None


class ObjectNotFound(PermanentError, KeyError):
    """No object under this key (it may have been removed since it was listed)."""


class VersionConflict(TransientError):
    """A conditional write lost: the object changed since the caller read it. Re-read, then retry."""

    def __init__(self, key: str, expected: str | None):
        super().__init__(f"{key} changed since it was read (expected {'no object' if expected is None else expected})")
        self.key, self.expected = key, expected


class UnsafeObject(PermanentError):
    """The store refuses to read or write an object, for a reason that is a property of the object.

    A local store's folder is shared with whoever can write into it: a symlink there must not
    become a way to read or overwrite files elsewhere (/etc/passwd, a key file), and a FIFO must
    not hang a run. `reason` is short and stable ("unsafe-link", "not-a-file") so a run can set
    the object aside under it; `detail` is for people and never names a path outside the store,
    which may itself be a secret.
    """

    def __init__(self, reason: str, detail: str, key: str | None = None):
        super().__init__(reason, detail, key)
        self.reason, self.detail, self.key = reason, detail, key

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key is not None else ""
        return f"{where}{self.reason} ({self.detail})"


class ObjectStore(Protocol):
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order.

        An entry the store will not read (set_aside_reason set, size 0) is listed all the same,
        so a run can report it instead of silently missing it.
        """

    def head(self, key: str) -> ObjectInfo | None:
        """The object's listing entry, or None when it does not exist."""

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound, or UnsafeObject for an entry it will not read."""

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write atomically: readers see the old or the new object, never half of one."""

    def holds(self, key: str, data: bytes) -> bool:
        """True when the object at key has exactly these bytes, checked as cheaply as the store
        allows: what makes an upload a sync (identical bytes are not written again, so the
        object's version, and everything keyed by it, survives)."""

    def put_if(self, key: str, data: bytes, expected_version: str | None, content_type: str | None = None) -> str:
        """Compare-and-swap: write only if the object's version is still ``expected_version``
        (None: only if there is no object). Returns the new version; raises VersionConflict."""

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        """Stream a file into the store without holding it in memory (multipart on S3); atomic."""

    def get_file(self, key: str, path: Path) -> None:
        """Stream an object into a file; ``path`` appears complete or not at all."""

    def delete(self, key: str) -> None:
        """Remove; a missing key is not an error."""

    def uri(self, key: str) -> str:
        """A stable URI naming the object (file://... or s3://bucket/key)."""
