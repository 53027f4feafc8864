"""The object store contract: a flat key space with prefixes, like S3."""

from __future__ import annotations

from typing import Iterator, Protocol

from spotline.models import ObjectInfo


class ObjectNotFound(KeyError):
    pass


class ObjectStore(Protocol):
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object's listing entry, or None when it does not exist."""

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write atomically: readers see the old or the new object, never half of one."""

    def delete(self, key: str) -> None:
        """Remove; a missing key is not an error."""

    def uri(self, key: str) -> str:
        """A stable URI naming the object (file://... or s3://bucket/key)."""
