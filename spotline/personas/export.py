"""Reading one day of the production export: files under a date partition, or a SQL database.

The export is whatever production writes: a users table (profiles) and the interaction logs (chat
messages with timestamps), as Parquet, CSV or JSONL files under ``<prefix>date=YYYY-MM-DD/``
(a file whose name starts with ``users`` is part of the users table, ``logs`` of the logs; several
parts each are fine), or two tables behind a SQLAlchemy URL.

Bad rows are normal in exports and must not stop the night: a row with a missing id, a text that
is not text, an unparseable timestamp, an oversized message or a duplicate id is set aside with
its reason (file and row number, never its content: it holds PII) and the rest goes on. A file
that cannot be parsed, or lacks a required column, is set aside whole. An export with nothing
readable left (no users or no log rows) fails here, before anything reaches a model.

The snapshot hash covers the bytes of every file read (or the rows fetched from SQL), so the
dataset's manifest names exactly what it was made from.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pandas as pd

from spotline.errors import PermanentError
from spotline.hashing import sha256_hex
from spotline.storage.base import ObjectStore

USER_COLUMNS = ("user_id",)
LOG_COLUMNS = ("message_id", "user_id", "ts", "text")
READERS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ExportUnreadable(PermanentError):
    """Nothing usable in the export for that day: the run fails before any model call."""


@dataclass
class SetAside:
    source: str  # file key (or sql table)
    row: int | None  # 0-based row in that source; None for a whole file
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "reason": self.reason}


@dataclass
class RawExport:
    day: date
    users: pd.DataFrame
    logs: pd.DataFrame
    sources: list[str]
    snapshot_hash: str
    set_aside: list[SetAside] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)

    def set_aside_counts(self) -> dict[str, int]:
        """Rows (or files) set aside, by the reason's kind ("missing value", "unparseable timestamp"...)."""
        return _counts(self.set_aside)


def partition(prefix: str, day: date) -> str:
    return f"{prefix.rstrip('/')}/date={day.isoformat()}/" if prefix else f"date={day.isoformat()}/"


def _kind(key: str, folder: str) -> str | None:
    name = key[len(folder):]
    for kind in ("users", "logs"):
        if name.startswith(kind):
            return kind
    return None


def _suffix(key: str) -> str | None:
    base = key.rsplit("/", 1)[-1].lower()
    base = base[:-3] if base.endswith(".gz") else base
    for ext in READERS:
        if base.endswith(ext):
            return ext
    return None


def _parse(data: bytes, key: str) -> pd.DataFrame:
    ext = _suffix(key)
    compression = "gzip" if key.lower().endswith(".gz") else None
    buf = io.BytesIO(data)
    if ext == ".parquet":
        return pd.read_parquet(buf)
    if ext == ".csv":
        # Strings as strings: an id "007" or a phone "+44..." must not become a number.
        return pd.read_csv(buf, dtype=str, keep_default_na=False, na_values=[""], compression=compression)
    return pd.read_json(buf, lines=True, dtype=False, compression=compression)


def read_files(store: ObjectStore, prefix: str, day: date, max_message_chars: int) -> RawExport:
    folder = partition(prefix, day)
    frames: dict[str, list[pd.DataFrame]] = {"users": [], "logs": []}
    set_aside: list[SetAside] = []
    sources, hashes = [], []
    for obj in sorted(store.list(folder), key=lambda o: o.key):
        kind = _kind(obj.key, folder)
        if kind is None:
            continue
        if _suffix(obj.key) is None:
            set_aside.append(SetAside(obj.key, None, f"unsupported format: {obj.key.rsplit('/', 1)[-1]} "
                                      "(Parquet, CSV or JSONL)"))
            continue
        data = store.get(obj.key)
        sources.append(obj.key)
        hashes.append(f"{obj.key}:{sha256_hex(data)}")
        try:
            frame = _parse(data, obj.key)
        except Exception as exc:  # noqa: BLE001 - any parser error: this file is unreadable, the others may not be
            set_aside.append(SetAside(obj.key, None, f"unreadable file: {type(exc).__name__}"))
            continue
        frame = frame.assign(_source=obj.key, _row=range(len(frame)))
        frames[kind].append(frame)
    if not sources:
        raise ExportUnreadable(f"no users or logs files under {folder!r}")
    return _validated(day, frames, sources, sha256_hex("\n".join(hashes)), set_aside, max_message_chars)


def read_sql(url: str, day: date, max_message_chars: int, users_table: str = "users",
             logs_table: str = "logs") -> RawExport:
    """The same export from a database: the users table, and the logs whose ts falls on `day` (UTC)."""
    import sqlalchemy as sa

    for table in (users_table, logs_table):
        if not table.replace("_", "").isalnum():
            raise ExportUnreadable(f"SQL table name {table!r} must be letters, digits and '_'")
    engine = sa.create_engine(url)
    bounds = {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}
    try:
        with engine.connect() as conn:
            users = pd.read_sql(sa.text(f'SELECT * FROM "{users_table}"'), conn, dtype=str)
            # ISO timestamps compare as text in SQLite and as timestamps elsewhere: one query for both.
            logs = pd.read_sql(sa.text(f'SELECT * FROM "{logs_table}" WHERE ts >= :start AND ts < :end'),
                               conn, params=bounds)
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # The URL may carry a password, the statement names tables: say the error's type only.
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
        raise ExportUnreadable(f"could not read the SQL export ({type(cause).__name__})") from None
    finally:
        engine.dispose()
    frames = {"users": [users.assign(_source=f"sql:{users_table}", _row=range(len(users)))],
              "logs": [logs.assign(_source=f"sql:{logs_table}", _row=range(len(logs)))]}
    digest = sha256_hex(users.to_json(orient="records").encode() + b"\n" + logs.to_json(orient="records").encode())
    return _validated(day, frames, [f"sql:{users_table}", f"sql:{logs_table}"], digest, [], max_message_chars)


def _validated(day: date, frames: dict[str, list[pd.DataFrame]], sources: list[str], digest: str,
               set_aside: list[SetAside], max_chars: int) -> RawExport:
    users = _checked("users", frames["users"], USER_COLUMNS, set_aside)
    logs = _checked("logs", frames["logs"], LOG_COLUMNS, set_aside)
    rows_read = {"users": len(users), "logs": len(logs)}
    users = _drop(users, users["user_id"].isna() | (users["user_id"].astype(str).str.strip() == ""),
                  "missing value: user_id", set_aside)
    users = _drop(users, users["user_id"].astype(str).duplicated(), "duplicate id: user_id", set_aside)
    logs = _drop(logs, logs["message_id"].isna(), "missing value: message_id", set_aside)
    logs = _drop(logs, logs["user_id"].isna(), "missing value: user_id", set_aside)
    logs = _drop(logs, ~logs["text"].map(lambda v: isinstance(v, str)), "wrong type: text is not a string", set_aside)
    logs = _drop(logs, logs["text"].str.strip() == "", "missing value: empty text", set_aside)
    logs = _drop(logs, logs["text"].str.len() > max_chars, f"oversized message: over {max_chars} characters",
                 set_aside)
    parsed = pd.to_datetime(logs["ts"], utc=True, errors="coerce", format="ISO8601")
    logs = _drop(logs.assign(ts=parsed), parsed.isna(), "unparseable timestamp: ts", set_aside)
    logs = _drop(logs, logs["message_id"].astype(str).duplicated(), "duplicate id: message_id", set_aside)
    if users.empty or logs.empty:
        what = "users" if users.empty else "log rows"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(_counts(set_aside).items())) or "none set aside"
        raise ExportUnreadable(f"the export for {day} has no usable {what} (read {rows_read['users']} users, "
                               f"{rows_read['logs']} log rows; set aside: {counts})")
    logs = logs.assign(user_id=logs["user_id"].astype(str), message_id=logs["message_id"].astype(str))
    users = users.assign(user_id=users["user_id"].astype(str))
    logs = logs.sort_values(["ts", "message_id"], kind="stable").reset_index(drop=True)
    users = users.sort_values("user_id", kind="stable").reset_index(drop=True)
    return RawExport(day, users.drop(columns=["_source", "_row"]), logs.drop(columns=["_source", "_row"]),
                     sources, digest, set_aside, rows_read)


def _counts(set_aside: list[SetAside]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in set_aside:
        key = s.reason.split(":", 1)[0]
        out[key] = out.get(key, 0) + 1
    return out


def _checked(kind: str, parts: list[pd.DataFrame], required: tuple[str, ...], set_aside: list[SetAside]) -> pd.DataFrame:
    kept = []
    for frame in parts:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            set_aside.append(SetAside(str(frame["_source"].iat[0]) if len(frame) else kind, None,
                                      f"missing column: {', '.join(missing)} ({len(frame)} rows)"))
            continue
        kept.append(frame)
    if not kept:
        return pd.DataFrame(columns=[*required, "_source", "_row"])
    return pd.concat(kept, ignore_index=True)


def _drop(frame: pd.DataFrame, bad: pd.Series, reason: str, set_aside: list[SetAside]) -> pd.DataFrame:
    bad = bad.fillna(True).astype(bool)
    for source, row in zip(frame.loc[bad, "_source"], frame.loc[bad, "_row"]):
        set_aside.append(SetAside(str(source), int(row), reason))
    return frame.loc[~bad]
