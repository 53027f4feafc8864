"""Object store on a local folder: the default, no cloud account needed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import quote
from typing import Iterator

from spotline.models import ObjectInfo
from spotline.storage.base import ObjectNotFound


class LocalObjectStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not key or key.startswith("/") or ".." in parts:
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        # Like nginx's ETag: size + mtime. Cheap to list; the content hash is checked after reading.
        return ObjectInfo(key=key, uri=self.uri(key), size=st.st_size, version=f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest folder the prefix names, then filter on the full prefix.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append((key, path))
        for key, path in sorted(found):
            try:
                yield self._info(key, path)
            except FileNotFoundError:  # removed while listing
                continue

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return self._info(key, path) if path.is_file() else None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        # Path.as_uri() drops a trailing slash: keep it, or the prefix "corpus/a/" would also
        # match "corpus/a-v2/..." and a full sync of one would delete the other.
        base = self.root.as_uri() + "/"
        return base + "/".join(quote(part) for part in key.split("/")) if key else base
