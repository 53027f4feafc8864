"""Copy a local folder into an object store: what `spotline upload` does.

The source folder is often someone else's export or an unpacked archive. A symlink in it must
not carry /etc/passwd or a key file into the store, where ingest would make it searchable, and a
FIFO must not hang the upload. So the folder is walked the way the local store walks its own
root (ConfinedFolder): links are followed only while they stay inside the source folder, only
regular files are read, and whatever is left out is reported with a reason rather than dropped
silently or fatal to the whole upload.

An upload is a sync, as `aws s3 sync` is: a file whose bytes the store already holds under its key
is not written again (ObjectStore.holds: a HEAD and a checksum on S3, a local comparison in the
folder store). Its version, and so ingestion's record of it, survives; re-running the demo then
reads and embeds nothing for unchanged documents.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from spotline.storage.base import ObjectStore, UnsafeObject
from spotline.storage.local import ConfinedFolder

# What a person reading the report needs, keyed by the walk's short reasons.
_REASONS = {
    "unsafe-link": "symlink outside the source folder",
    "not-a-file": "not a regular file",
    "dangling-link": "dangling symlink (its target does not exist)",
    "link-cycle": "symlink to a folder it is itself inside (a loop)",
    "unreadable": "unreadable: permission denied",
    "unreadable-folder": "unreadable folder: permission denied",
}


class UploadReport(BaseModel):
    uploaded: list[str] = Field(default_factory=list, description="keys written, in upload order")
    unchanged: list[str] = Field(default_factory=list, description="keys that already held these exact bytes")
    skipped: list[tuple[str, str]] = Field(
        default_factory=list, description="(path relative to the source folder, why it was not uploaded)"
    )


def upload_folder(store: ObjectStore, source_dir: Path, prefix: str) -> UploadReport:
    """Put every regular file under source_dir into the store as `prefix/<relative path>`,
    unless the store already holds exactly those bytes there.

    Symlinks inside the folder are followed (a folder link too, without looping); a link out
    of it, a FIFO, socket or device, and a file that cannot be read are skipped and reported.
    A failing store is not skipped over: its error ends the upload. The caller prepares the
    store (an S3 bucket must exist).
    """
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise NotADirectoryError(f"{source_dir} is not a folder")
    folder = ConfinedFolder(source_dir, "the source folder")
    base = prefix.rstrip("/") + "/"
    report = UploadReport()
    for entry in folder.walk():
        rel = entry.key or "."
        if entry.stat is None:
            why = entry.refusal.reason if entry.refusal else entry.skipped
            report.skipped.append((rel, _REASONS.get(why, why)))
            continue
        try:
            # Read again through the checks: the walk's answer may be stale by now.
            data = folder.read(tuple(entry.key.split("/")))
        except UnsafeObject as exc:  # swapped for a link or a FIFO since the walk
            report.skipped.append((rel, _REASONS.get(exc.reason, exc.reason)))
            continue
        except FileNotFoundError:
            report.skipped.append((rel, "removed while uploading"))
            continue
        except PermissionError:
            report.skipped.append((rel, _REASONS["unreadable"]))
            continue
        except OSError as exc:  # e.g. EIO on a failing disk: this file, not the whole upload
            report.skipped.append((rel, f"unreadable: {exc.strerror or type(exc).__name__}"))
            continue
        key = base + entry.key
        if store.holds(key, data):
            report.unchanged.append(key)
            continue
        store.put(key, data)
        report.uploaded.append(key)
    return report
