"""Reading the production export: every format, a SQL database, and bad rows set aside with reasons."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import date

import pandas as pd
import pytest

from spotline.personas.export import ExportUnreadable, read_files, read_sql
from spotline.personas.fake_export import generate
from spotline.storage.local import LocalObjectStore

DAY = date(2026, 11, 30)
PREFIX = "exports/production/"


@pytest.fixture(scope="module")
def fake():
    return generate(users=20, messages=60, seed=3, day=DAY)


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "store")


def _put(store, name: str, frame: pd.DataFrame, fmt: str) -> None:
    buf = io.BytesIO()
    if fmt == "parquet":
        frame.to_parquet(buf, index=False)
    elif fmt == "csv":
        frame.to_csv(buf, index=False)
    else:
        buf.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict(orient="records")).encode())
    store.put(f"{PREFIX}date={DAY}/{name}.{fmt}", buf.getvalue())


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_parquet_csv_and_jsonl_exports_read_as_the_same_rows(store, fake, fmt):
    _put(store, "users", fake.users, fmt)
    _put(store, "logs", fake.logs, fmt)
    raw = read_files(store, PREFIX, DAY, max_message_chars=8000)
    assert raw.set_aside == []
    assert sorted(raw.logs["message_id"]) == sorted(fake.logs["message_id"])
    assert dict(zip(raw.logs["message_id"], raw.logs["text"])) == dict(zip(fake.logs["message_id"], fake.logs["text"]))
    assert sorted(raw.users["phone"]) == sorted(fake.users["phone"])  # "+44..." stays a string in CSV
    assert str(raw.logs["ts"].dt.tz) == "UTC"
    assert len(raw.snapshot_hash) == 64


def test_several_parts_of_one_table_are_read_together_and_other_days_are_not(store, fake):
    _put(store, "users", fake.users, "parquet")
    _put(store, "logs-part-0", fake.logs.iloc[:30], "jsonl")
    _put(store, "logs-part-1", fake.logs.iloc[30:], "parquet")
    store.put(f"{PREFIX}date=2026-11-29/logs.jsonl", b'{"message_id": "other-day"}\n')
    raw = read_files(store, PREFIX, DAY, max_message_chars=8000)
    assert len(raw.logs) == 60 and "other-day" not in set(raw.logs["message_id"])
    assert len(raw.sources) == 3


def test_the_sql_source_reads_the_same_export_from_a_real_sqlite_file(tmp_path, fake, store):
    db = tmp_path / "prod.sqlite"
    with sqlite3.connect(db) as conn:
        fake.users.to_sql("users", conn, index=False)
        other_day = fake.logs.iloc[:1].assign(message_id="yesterday", ts="2026-11-29T23:59:59Z")
        pd.concat([fake.logs, other_day]).to_sql("logs", conn, index=False)
    raw = read_sql(f"sqlite:///{db}", DAY, max_message_chars=8000)
    assert sorted(raw.logs["message_id"]) == sorted(fake.logs["message_id"])  # only that day's logs
    assert sorted(raw.users["email"]) == sorted(fake.users["email"])
    with pytest.raises(ExportUnreadable, match="OperationalError") as caught:
        read_sql(f"sqlite:///{db}", DAY, 8000, users_table="no_such_table")
    assert str(db) not in str(caught.value)  # the URL may carry a password: never in the message


def test_bad_rows_are_counted_and_set_aside_with_a_reason_and_the_rest_is_read(store, fake):
    logs = fake.logs.copy().astype(object)
    logs.loc[0, "ts"] = "yesterday-ish"
    logs.loc[1, "text"] = 12345
    logs.loc[2, "text"] = "x" * 9000
    logs.loc[3, "message_id"] = None
    logs.loc[4, "message_id"] = logs.loc[5, "message_id"]
    logs.loc[6, "text"] = "   "
    _put(store, "users", fake.users, "parquet")
    _put(store, "logs", logs, "jsonl")
    _put(store, "logs-extra", pd.DataFrame([{"id": 1, "body": "no required columns"}]), "csv")
    store.put(f"{PREFIX}date={DAY}/logs-broken.parquet", b"PAR1 this is not parquet")
    store.put(f"{PREFIX}date={DAY}/logs.xlsx", b"binary")
    raw = read_files(store, PREFIX, DAY, max_message_chars=8000)
    reasons = {(s.source.rsplit("/", 1)[-1], s.row, s.reason) for s in raw.set_aside}
    assert reasons == {
        ("logs.jsonl", 0, "unparseable timestamp: ts"),
        ("logs.jsonl", 1, "wrong type: text is not a string"),
        ("logs.jsonl", 2, "oversized message: over 8000 characters"),
        ("logs.jsonl", 3, "missing value: message_id"),
        ("logs.jsonl", 5, "duplicate id: message_id"),
        ("logs.jsonl", 6, "missing value: empty text"),
        ("logs-extra.csv", None, "missing column: message_id, user_id, ts, text (1 rows)"),
        ("logs-broken.parquet", None, "unreadable file: ArrowInvalid"),
        ("logs.xlsx", None, "unsupported format: logs.xlsx (Parquet, CSV or JSONL)"),
    }
    assert len(raw.logs) == 60 - 6
    assert raw.set_aside_counts()["missing value"] == 2
    # A set-aside record never carries the row's content (it holds PII).
    assert all(fake.logs.loc[i, "text"][:20] not in s.reason for s in raw.set_aside for i in range(7))


def test_an_unreadable_export_fails_before_anything_else_happens(store):
    with pytest.raises(ExportUnreadable, match="no users or logs files"):
        read_files(store, PREFIX, DAY, 8000)
    store.put(f"{PREFIX}date={DAY}/users.csv", b"\x00\x01garbage")
    store.put(f"{PREFIX}date={DAY}/logs.parquet", b"garbage")
    with pytest.raises(ExportUnreadable, match="no usable users"):
        read_files(store, PREFIX, DAY, 8000)


def test_an_export_with_no_rows_fails_and_says_so(store, fake):
    _put(store, "users", fake.users, "csv")
    store.put(f"{PREFIX}date={DAY}/logs.csv", b"message_id,user_id,ts,text\n")
    with pytest.raises(ExportUnreadable, match=r"no usable log rows \(read 20 users, 0 log rows"):
        read_files(store, PREFIX, DAY, 8000)
