"""Object store on a local folder: the default, no cloud account needed.

The folder is shared with whoever can write into it, so the store does not trust what it finds
there. A symlink is followed only while it stays inside the root (a link to /etc/passwd must not
make the file searchable), and only regular files are read (opening a FIFO would hang the run).
Entries refused for either reason are still listed, with `set_aside_reason` set, so a run can
report them rather than silently miss them.

Checks never trust a path checked a moment earlier: each name is opened with O_PATH (which
opens nothing: no read, no device side effect, no waiting on a FIFO) and the kernel is asked
where the descriptor really landed (/proc/self/fd), then the file is read through that same
descriptor. Swapping a link between the check and the read therefore leads nowhere. That is
Linux only, like the rest of the project (pyproject pins the environment to Linux).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import quote

from spotline.errors import PermanentError
from spotline.storage.base import ObjectInfo, ObjectNotFound, UnsafeObject, VersionConflict

# Enough to fstat a name and ask where it landed; opening the file for real comes after the checks.
_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC
_COPY_CHUNK = 8 * 1024 * 1024  # streamed copies hold 8 MiB at a time, whatever the file's size

_KINDS = {
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class ProcUnavailable(PermanentError):
    """/proc/self/fd is missing (not mounted). Raised instead of FileNotFoundError, which would
    read as "no such object": a store that looks empty makes a full sync delete everything."""


def _fd_path(fd: int) -> str:
    """Where an open descriptor really is, as the kernel resolved it (not as a path claims)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        raise ProcUnavailable("the local object store needs /proc/self/fd (Linux with /proc mounted)") from None


def _reopen(fd: int, flags: int) -> int:
    """A usable descriptor on exactly the inode an O_PATH descriptor holds, whatever the name
    it was opened by points at now."""
    try:
        return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)
    except FileNotFoundError:  # fd is open, so only a missing /proc says this
        raise ProcUnavailable("the local object store needs /proc/self/fd (Linux with /proc mounted)") from None


@dataclass(frozen=True)
class Refusal:
    """Why an entry is never read: reason "unsafe-link" or "not-a-file".

    `at` is the relative path of the entry that caused it: the key itself, or a folder link
    above it. The detail never names a link's target outside the folder: that path may be a
    secret in itself.
    """

    reason: str
    detail: str
    version: str
    at: str

    def detail_for(self, key: str) -> str:
        return self.detail if self.at == key else f"{self.detail} (at {self.at!r})"


@dataclass(frozen=True)
class TreeEntry:
    """One name a confined walk met: a regular file (`stat`), an entry refused (`refusal`), or
    one with nothing to read (`skipped`: "dangling-link", "link-cycle", "unreadable",
    "unreadable-folder")."""

    key: str
    stat: os.stat_result | None = None
    refusal: Refusal | None = None
    skipped: str | None = None


class ConfinedFolder:
    """A folder read without ever leaving it: symlinks are followed only while they land inside,
    only regular files are opened for reading.

    Shared by LocalObjectStore (its root) and upload_folder (the source folder): both read a
    folder someone else may have filled with links.
    """

    def __init__(self, root: Path | str, name: str = "the folder"):
        self.root = os.path.realpath(root)
        self.name = name  # how details refer to it: "the store root", "the source folder"
        # With the separator, so /data/store-old does not count as inside /data/store.
        self._inside_prefix = self.root.rstrip("/") + "/"

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self._inside_prefix)

    def open_root(self) -> int:
        """O_PATH descriptor of the root; raises FileNotFoundError when it is gone."""
        fd = os.open(self.root, _PATH_FLAGS | os.O_DIRECTORY)
        where = _fd_path(fd)
        if where != self.root:
            os.close(fd)
            if where == self.root + " (deleted)":  # removed just now, under our feet
                raise FileNotFoundError(errno.ENOENT, "folder removed", self.root)
            # The root itself was swapped for a link: everything "inside" would be elsewhere.
            raise UnsafeObject("unsafe-link", f"{self.name} was replaced by a symlink after it was opened")
        return fd

    # ------------------------------------------------------------------ one name

    def land(self, dirfd: int, name: str, key: str) -> tuple[int, os.stat_result] | Refusal | None:
        """Open `name` in the folder `dirfd`, following links, and check where it landed.

        Returns an O_PATH descriptor (the caller closes it) with its stat when it landed inside;
        a Refusal when it left the folder; None when nothing is there (missing, or a dangling
        link or link loop that stays inside: to a reader that is a missing object).
        """
        try:
            fd = os.open(name, _PATH_FLAGS, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return self._dangling(dirfd, name, key)
            raise
        try:
            where, st = _fd_path(fd), os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if self.inside(where):
            return fd, st
        os.close(fd)
        return self._outside(dirfd, name, key)

    def _dangling(self, dirfd: int, name: str, key: str) -> Refusal | None:
        try:
            text = os.readlink(name, dir_fd=dirfd)
        except OSError:
            return None  # not a link: simply nothing there
        # Refused on where it points even while the target is missing, so it does not turn into
        # a readable object the moment someone creates the target. Resolved as far as it exists.
        target = os.path.realpath(os.path.join(_fd_path(dirfd), text))
        return None if self.inside(target) else self._outside(dirfd, name, key)

    def _outside(self, dirfd: int, name: str, key: str) -> Refusal:
        # The version comes from the link itself (a symlink cannot be edited, only replaced,
        # which gives a new inode and mtime): stable while the link stays, and unlike a hash of
        # the link text it reveals nothing about the target to anyone reading run records.
        try:
            lst = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            version = f"link-{lst.st_ino:x}-{lst.st_mtime_ns:x}"
        except OSError:  # removed meanwhile: refused all the same
            version = "link-gone"
        return Refusal("unsafe-link", f"symlink to a path outside {self.name}", version, key)

    @staticmethod
    def not_a_file(st: os.stat_result, key: str) -> Refusal:
        kind = stat.S_IFMT(st.st_mode)
        # Inode-based: a FIFO's mtime changes whenever someone writes into it.
        version = f"special-{kind:o}-{st.st_ino:x}"
        return Refusal("not-a-file", f"a {_KINDS.get(kind, 'special file')}, not a regular file", version, key)

    # ------------------------------------------------------------------ paths

    def locate(
        self, parts: tuple[str, ...], chain: set[tuple[int, int]] | None = None
    ) -> tuple[int, os.stat_result] | Refusal | None:
        """Follow a relative path one component at a time, every landing checked, so a folder
        link leaving the root anywhere along the path refuses the whole path.

        Returns what `land` returns for the last component (the root itself for no parts).
        `chain`, when given, collects the (device, inode) of every folder passed through.
        """
        dirfd = self.open_root()
        try:
            st = os.fstat(dirfd)
            for i, name in enumerate(parts):
                if chain is not None:
                    chain.add((st.st_dev, st.st_ino))
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a file where a folder was expected: no such object
                landing = self.land(dirfd, name, "/".join(parts[: i + 1]))
                if not isinstance(landing, tuple):
                    return landing
                os.close(dirfd)
                dirfd, st = landing
            if chain is not None:
                chain.add((st.st_dev, st.st_ino))
            found, dirfd = (dirfd, st), -1
            return found
        finally:
            if dirfd != -1:
                os.close(dirfd)

    def open_file(self, parts: tuple[str, ...]) -> int:
        """A descriptor open for reading on the regular file `parts` names inside the folder.

        Raises FileNotFoundError, IsADirectoryError, or UnsafeObject for a path that leaves the
        folder or a file that is not a regular one (never opened for real: a FIFO would block).
        """
        key = "/".join(parts)
        found = self.locate(parts)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", key)
        if isinstance(found, Refusal):
            raise UnsafeObject(found.reason, found.detail_for(key), key)
        fd, st = found
        try:
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "a folder, not an object", key)
            if not stat.S_ISREG(st.st_mode):
                refusal = self.not_a_file(st, key)
                raise UnsafeObject(refusal.reason, refusal.detail, key)
            # Through the checked descriptor: the same inode, even if the name was swapped since.
            return _reopen(fd, os.O_RDONLY | os.O_NOCTTY)
        finally:
            os.close(fd)

    def read(self, parts: tuple[str, ...]) -> bytes:
        with open(self.open_file(parts), "rb") as fh:
            return fh.read()

    def open_folder(self, parts: tuple[str, ...], create: bool) -> int | None:
        """O_PATH descriptor of the folder `parts` names, for writing or deleting relative to it.

        Every component is checked to land inside, so a write never goes through a folder link
        leaving the root (UnsafeObject). Missing folders are made when `create`; otherwise a
        missing folder gives None.
        """
        dirfd = self.open_root()
        try:
            for i, name in enumerate(parts):
                key = "/".join(parts[: i + 1])
                if create:
                    try:
                        # mkdir never follows a link at the name itself: whatever is there is
                        # checked below like any other existing entry.
                        os.mkdir(name, dir_fd=dirfd)
                    except FileExistsError:
                        pass
                landing = self.land(dirfd, name, key)
                if isinstance(landing, Refusal):
                    raise UnsafeObject(landing.reason, landing.detail, key)
                if landing is None:
                    if create:  # a dangling link inside the root sits where the folder should be
                        raise FileExistsError(errno.EEXIST, "a dangling symlink is in the way", key)
                    return None
                os.close(dirfd)
                dirfd, st = landing
                if not stat.S_ISDIR(st.st_mode):
                    if create:
                        raise NotADirectoryError(errno.ENOTDIR, "not a folder", key)
                    return None
            found, dirfd = dirfd, -1
            return found
        finally:
            if dirfd != -1:
                os.close(dirfd)

    # ------------------------------------------------------------------ walking

    def walk(self, under: tuple[str, ...] = (), prefix: str = "", skip_temp: bool = False) -> Iterator[TreeEntry]:
        """Every entry below the folder `under` whose relative path starts with prefix, depth
        first, names in sorted order.

        Folder links inside are followed; a link back to a folder already being walked (an
        ancestor, or the folder itself) is a loop and reported as "link-cycle" instead. Only the
        current chain of folders counts, not every folder seen: what a link names is listed
        under the link too, wherever the real folder is, so the keys do not depend on the
        prefix a listing starts from. `skip_temp` leaves out the store's own half-written
        ".tmp-*" files.
        """
        chain: set[tuple[int, int]] = set()
        found = self.locate(under, chain)
        if not isinstance(found, tuple):
            return  # missing, or refused: the listing of its parent reports the refused link
        fd, st = found
        try:
            if stat.S_ISDIR(st.st_mode):
                yield from self._scan(fd, "/".join(under), prefix, frozenset(chain), skip_temp)
        finally:
            os.close(fd)

    def _scan(
        self, dirfd: int, dirkey: str, prefix: str, chain: frozenset[tuple[int, int]], skip_temp: bool
    ) -> Iterator[TreeEntry]:
        try:
            rfd = _reopen(dirfd, os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            yield TreeEntry(dirkey, skipped="unreadable-folder")
            return
        try:
            with os.scandir(rfd) as it:  # scandir works on a duplicate: rfd is still ours to close
                names = sorted(e.name for e in it)
        finally:
            os.close(rfd)
        for name in names:
            key = f"{dirkey}/{name}" if dirkey else name
            wanted = key.startswith(prefix)
            if not wanted and not prefix.startswith(key + "/"):
                continue  # neither matches nor leads to anything that could
            try:
                lst = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while listing
            except PermissionError:
                if wanted:
                    yield TreeEntry(key, skipped="unreadable")
                continue
            mode = lst.st_mode
            if stat.S_ISREG(mode):
                # Not a link, in a folder already checked: inside by construction.
                if wanted and not (skip_temp and name.startswith(".tmp-")):
                    yield TreeEntry(key, stat=lst)
                continue
            if not stat.S_ISLNK(mode) and not stat.S_ISDIR(mode):
                if wanted:  # never opened, not even with O_PATH
                    yield TreeEntry(key, refusal=self.not_a_file(lst, key))
                continue
            try:
                landing = self.land(dirfd, name, key)
            except PermissionError:
                if wanted:
                    yield TreeEntry(key, skipped="unreadable")
                continue
            if landing is None:
                if wanted and stat.S_ISLNK(mode):
                    yield TreeEntry(key, skipped="dangling-link")
                continue
            if isinstance(landing, Refusal):
                if wanted:  # one entry, even for a folder: nothing below it is looked at
                    yield TreeEntry(key, refusal=landing)
                continue
            fd, st = landing
            try:
                if stat.S_ISDIR(st.st_mode):
                    ident = (st.st_dev, st.st_ino)
                    if ident in chain:
                        if wanted:
                            yield TreeEntry(key, skipped="link-cycle")
                    else:
                        yield from self._scan(fd, key, prefix, chain | {ident}, skip_temp)
                elif wanted and stat.S_ISREG(st.st_mode):
                    yield TreeEntry(key, stat=st)
                elif wanted:
                    yield TreeEntry(key, refusal=self.not_a_file(st, key))
            finally:
                os.close(fd)


class LocalObjectStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._folder = ConfinedFolder(self.root, "the store root")

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        # No parts: "." or "./" names the root itself, not an object.
        if not key or key.startswith("/") or ".." in parts or not parts:
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _parts(self, key: str) -> tuple[str, ...]:
        self._path(key)  # validates
        return PurePosixPath(key).parts

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        # Like nginx's ETag: size + mtime. Cheap to list; the content hash is checked after reading.
        return ObjectInfo(key=key, uri=self.uri(key), size=st.st_size, version=f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def _set_aside(self, key: str, refusal: Refusal) -> ObjectInfo:
        return ObjectInfo(
            key=key, uri=self.uri(key), size=0, version=refusal.version,
            set_aside_reason=refusal.reason, set_aside_detail=refusal.detail_for(key),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest folder the prefix names, then filter on the full prefix.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        under = PurePosixPath(folder).parts
        if under:
            self._path(folder)  # validates: no "..", not absolute
        found: list[ObjectInfo] = []
        try:
            for entry in self._folder.walk(under, prefix, skip_temp=True):
                if entry.stat is not None:
                    found.append(self._info(entry.key, entry.stat))
                elif entry.refusal is not None:
                    found.append(self._set_aside(entry.key, entry.refusal))
                # Dangling links and link loops are missing objects; unreadable folders were
                # skipped before too (os.walk), so the listing stays what it was for them.
        except FileNotFoundError:  # the root itself is gone: an empty store
            return
        yield from sorted(found, key=lambda o: o.key)

    def head(self, key: str) -> ObjectInfo | None:
        parts = self._parts(key)
        try:
            found = self._folder.locate(parts)
        except FileNotFoundError:
            return None
        if found is None:
            return None
        if isinstance(found, Refusal):
            return self._set_aside(key, found)
        fd, st = found
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            return self._set_aside(key, self._folder.not_a_file(st, key))
        return self._info(key, st)

    def get(self, key: str) -> bytes:
        try:
            return self._folder.read(self._parts(key))
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def holds(self, key: str, data: bytes) -> bool:
        # A local file has no stored checksum: compare sizes, then bytes (a local read, no transfer).
        info = self.head(key)
        if info is None or info.set_aside_reason or info.size != len(data):
            return False
        try:
            return self.get(key) == data
        except (ObjectNotFound, UnsafeObject):
            return False

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        def copy(fh) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, _COPY_CHUNK)

        self._write(key, copy)

    def put_if(self, key: str, data: bytes, expected_version: str | None, content_type: str | None = None) -> str:
        # The folder's own descriptor is the lock: flock is advisory, and every conditional writer
        # of this store takes it, so check-then-rename is one step for them.
        parts = self._parts(key)
        self.root.mkdir(parents=True, exist_ok=True)
        dirfd = self._folder.open_folder(parts[:-1], create=True)
        try:
            lockfd = _reopen(dirfd, os.O_RDONLY | os.O_DIRECTORY)  # O_PATH descriptors cannot be locked
        finally:
            os.close(dirfd)
        try:
            fcntl.flock(lockfd, fcntl.LOCK_EX)
            current = self.head(key)
            if (current.version if current else None) != expected_version:
                raise VersionConflict(key, expected_version)
            self._write(key, lambda fh: fh.write(data))
            written = self.head(key)
            if written and current and written.version == current.version:
                # Same size within one mtime tick (coarse on some file systems): bump the mtime so
                # every conditional write changes the version, or a stale writer would win.
                st = os.stat(parts[-1], dir_fd=lockfd, follow_symlinks=False)
                os.utime(parts[-1], ns=(st.st_atime_ns, st.st_mtime_ns + 1), dir_fd=lockfd, follow_symlinks=False)
                written = self.head(key)
            return written.version if written else ""
        finally:
            os.close(lockfd)  # closing the descriptor releases the lock

    def get_file(self, key: str, path: Path) -> None:
        path = Path(path)
        try:
            fd = self._folder.open_file(self._parts(key))
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            with os.fdopen(fd, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _write(self, key: str, write) -> None:
        parts = self._parts(key)
        self.root.mkdir(parents=True, exist_ok=True)  # made again if removed, as before
        dirfd = self._folder.open_folder(parts[:-1], create=True)
        try:
            # A fresh name with O_EXCL | O_NOFOLLOW: never a file or link someone planted. 0600
            # as mkstemp made it before.
            tmp = f".tmp-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
            try:
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                # rename replaces the name itself: a link already at the key is replaced by the
                # object, never written through.
                os.replace(tmp, parts[-1], src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dirfd)
                except FileNotFoundError:
                    pass
                raise
        finally:
            os.close(dirfd)

    def delete(self, key: str) -> None:
        parts = self._parts(key)
        try:
            dirfd = self._folder.open_folder(parts[:-1], create=False)
        except FileNotFoundError:  # the root itself is gone
            return
        if dirfd is None:
            return
        try:
            # unlink removes a link itself, never its target; the folder was checked above.
            os.unlink(parts[-1], dir_fd=dirfd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dirfd)

    def uri(self, key: str) -> str:
        # Path.as_uri() drops a trailing slash: keep it, or the prefix "corpus/a/" would also
        # match "corpus/a-v2/..." and a full sync of one would delete the other.
        base = self.root.as_uri() + "/"
        return base + "/".join(quote(part) for part in key.split("/")) if key else base
