"""The sanitizer on the committed, labelled production sample: what it must catch, and how.

The sample (data/production_sample, written by data/build_production_sample.py) plants every PII
value with a label; these tests measure against those labels, not against hand-picked strings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date

import pandas as pd
import pytest

from spotline.personas.evaluation import presidio_batch_engine, presidio_spans, score
from spotline.personas.export import read_files
from spotline.personas.fake_export import STRUCTURED
from spotline.personas.sanitize import (
    EMAIL,
    PERSON,
    PHONE,
    ColumnPolicy,
    KnownValues,
    LeakFound,
    LeakScanner,
    Pseudonymizer,
    Sanitizer,
    fold,
    known_values_of,
    pattern_recognizers,
    sanitize_snapshot,
)
from spotline.storage.local import LocalObjectStore
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "production_sample"
DAY = date(2026, 11, 30)
KEY = "test-pseudonym-key-0123456789"


@pytest.fixture(scope="module")
def sample():
    users = pd.read_csv(SAMPLE / f"date={DAY}" / "users.csv", dtype=str, keep_default_na=False, na_values=[""])
    logs = pd.read_json(SAMPLE / f"date={DAY}" / "logs.jsonl", lines=True, dtype=False)
    labels = [type("Label", (), row)() for row in map(json.loads, (SAMPLE / "labels.jsonl").read_text().splitlines())]
    return users, logs, labels


@pytest.fixture(scope="module")
def detected(sample):
    """What Spotline's sanitizer and Presidio's batch engine (same recognizers) find in every log text."""
    users, logs, labels = sample
    recognizers = pattern_recognizers()
    sanitizer = Sanitizer(known_values_of(users, ColumnPolicy()), recognizers)
    texts = dict(zip(logs["message_id"], logs["text"]))
    ours = {row: [(s.start, s.end, s.entity) for s in sanitizer.spans(text)] for row, text in texts.items()}
    theirs = presidio_spans(presidio_batch_engine(recognizers), list(texts), list(texts.values()))
    log_labels = [l for l in labels if l.table == "logs"]
    return texts, log_labels, ours, theirs


def test_the_committed_sample_is_what_its_generator_writes():
    done = subprocess.run([sys.executable, str(ROOT / "data" / "build_production_sample.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_structured_identifier_and_known_value_in_the_sample_is_caught(detected):
    texts, labels, ours, _ = detected
    rows = {r["entity"]: r for r in score(texts, labels, ours)}
    must = [l for l in labels if l.entity in STRUCTURED or l.known]
    assert len(must) > 1000 and {l.entity for l in must} >= set(STRUCTURED) | {PERSON, "LOCATION"}
    missed = [(l.row, l.entity) for l in must
              if not all(any(s <= i < e for s, e, _ in ours[l.row]) for i in range(l.start, l.end)
                         if texts[l.row][i].isalnum())]
    assert not missed, f"{len(missed)} planted values left in the text, e.g. {missed[:5]}"
    for entity in set(STRUCTURED) | {PERSON, "LOCATION"}:
        assert rows[entity]["recall"] == 1.0, rows[entity]


def test_recall_is_never_below_presidios_pattern_only_engine_on_the_same_rows(detected):
    texts, labels, ours, theirs = detected
    mine = {r["entity"]: r for r in score(texts, labels, ours)}
    base = {r["entity"]: r for r in score(texts, labels, theirs)}
    for entity, row in base.items():
        if row["recall"] is not None:
            assert mine[entity]["recall"] >= row["recall"], (entity, mine[entity], row)
    # Names and addresses are what patterns alone cannot see: the known-value layer is why they go.
    assert base[PERSON]["recall"] == 0.0 and mine[PERSON]["recall"] == 1.0


def test_no_canary_survives_sanitization_of_the_sample(sample):
    users, logs, labels = sample
    snap = sanitize_snapshot(users, logs, ColumnPolicy(), Pseudonymizer(KEY))
    canaries = {fold(l.value)[0] for l in labels if l.canary}
    assert len({l.value for l in labels if l.canary}) >= 200
    published = fold(" ".join(snap.logs["text"]) + " " + snap.users.to_csv())[0]
    assert [c for c in canaries if c in published] == []
    # What remains is still about the product: the persona model needs the questions.
    assert snap.logs["text"].str.contains("invoice|expense|card|API|workspace", case=False).mean() > 0.5
    assert set(snap.users.columns) == {"user", "plan", "role", "locale", "country"}


def test_a_users_value_is_removed_from_logs_whatever_its_case_spacing_or_punctuation():
    users = pd.DataFrame([{"user_id": "u1", "full_name": "Jürgen Großmann", "email": "j.grossmann@web.de",
                           "phone": "+4915112345678", "street": "Hauptstraße 12", "account_id": "LK-12345678"}])
    sanitizer = Sanitizer(known_values_of(users, ColumnPolicy()), recognizers=[])  # known values alone
    for typed in ["JÜRGEN GROSSMANN", "juergen grossmann", "jurgen  großmann", "Jürgen-Großmann",
                  "j.grossmann [at] web dot de", "J.GROSSMANN@WEB.DE", "0151 1234 5678", "0151-123-45678",
                  "+49 151 12345678", "hauptstrasse 12", "Hauptstr. 12", "lk-12345678", "LK12345678"]:
        text = f"ask {typed} about it"
        clean, spans = sanitizer.scrub(text)
        assert clean.startswith("ask <") and clean.endswith("> about it"), (typed, clean)
    # Whole words only: a value inside a longer word or number is not that value.
    assert sanitizer.scrub("jürgens report, LK-123456789")[1] == []


def test_a_name_that_is_a_function_word_is_redacted_alone_only_when_written_as_a_name():
    users = pd.DataFrame([{"user_id": "u1", "full_name": "Will Turner"}, {"user_id": "u2", "full_name": "Bill Ng"}])
    sanitizer = Sanitizer(known_values_of(users, ColumnPolicy()), recognizers=[])
    assert sanitizer.scrub("I will ask Will")[0] == "I will ask <PERSON>"
    assert sanitizer.scrub("will turner said so")[0] == "<PERSON> said so"  # the full name: any case
    assert sanitizer.scrub("ask bill, the bill is wrong")[0] == "ask <PERSON>, the <PERSON> is wrong"


def test_a_column_nobody_declared_is_dropped_and_its_values_redacted_from_the_logs():
    users = pd.DataFrame([{"user_id": "u1", "plan": "team", "nickname": "Zorblax99"}])
    logs = pd.DataFrame([{"message_id": "m1", "user_id": "u1", "ts": "2026-11-30T10:00:00Z",
                          "text": "hi, zorblax99 here", "mood_score": 0.3}])
    snap = sanitize_snapshot(users, logs, ColumnPolicy(), Pseudonymizer(KEY))
    assert "nickname" not in snap.users.columns and "mood_score" not in snap.logs.columns
    assert snap.logs["text"][0] == "hi, <PII> here"


def test_pseudonyms_are_stable_across_processes_and_unrelated_under_another_key():
    script = ("from spotline.personas.sanitize import Pseudonymizer; "
              f"print(Pseudonymizer({KEY!r})('user_id', 'usr_42'))")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    p = Pseudonymizer(KEY)
    assert other.stdout.strip() == p("user_id", "usr_42") == p("user_id", " USR_42 ")
    assert p("user_id", "usr_42") != Pseudonymizer(KEY + "x")("user_id", "usr_42")
    assert p("user_id", "usr_42") != p("session_id", "usr_42")  # one value, two kinds: two pseudonyms
    assert re.fullmatch(r"use_[0-9a-f]{16}", p("user_id", "usr_42"))  # nothing of the value in it
    with pytest.raises(Exception, match="at least 16 bytes"):
        Pseudonymizer("short")


def test_the_leak_scan_names_row_and_field_never_the_value():
    known = KnownValues()
    known.add(EMAIL, "marta.ruiz@telefonica.net")
    known.add(PERSON, "Marta Ruiz")
    scanner = LeakScanner(known)
    records = [("p1", "name", "Marta"), ("p2", "prompt", "write to MARTA RUIZ today"),
               ("p3", "prompt", "marta.ruiz [at] telefonica dot net")]
    with pytest.raises(LeakFound) as caught:
        scanner.check("after generation", records)
    hits = {(h.row, h.field, h.entity) for h in caught.value.hits}
    # A first name alone does not identify; the e-mail's local part is the full name, so p3 is both.
    assert hits == {("p2", "prompt", PERSON), ("p3", "prompt", EMAIL), ("p3", "prompt", PERSON)}
    assert "marta" not in str(caught.value).lower() and "p2.prompt" in str(caught.value)


def test_the_sanitizer_runs_with_every_outbound_connection_refused(tmp_path):
    """A fresh process, sockets blocked before any import, an empty cache: Presidio, tldextract and
    spaCy must not reach for the network, and every e-mail must still be checked and caught."""
    script = f"""
import socket, sys
attempts = []
def refuse(*a, **k):
    attempts.append(a[:2])
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import pandas as pd
from spotline.personas.sanitize import ColumnPolicy, Pseudonymizer, sanitize_snapshot
users = pd.read_csv({str(SAMPLE / f"date={DAY}" / "users.csv")!r}, dtype=str)
logs = pd.read_json({str(SAMPLE / f"date={DAY}" / "logs.jsonl")!r}, lines=True, dtype=False)
snap = sanitize_snapshot(users, logs, ColumnPolicy(), Pseudonymizer({KEY!r}))
print(snap.stats.by_entity.get("EMAIL_ADDRESS", 0), len(attempts))
"""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    emails, attempts = map(int, done.stdout.split())
    assert attempts == 0 and emails > 100
    assert not (tmp_path / "cache" / "python-tldextract").exists()


def test_the_export_reader_and_sanitizer_agree_with_the_labels_through_the_object_store(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    for path in (SAMPLE / f"date={DAY}").iterdir():
        store.put(f"exports/production/date={DAY}/{path.name}", path.read_bytes())
    raw = read_files(store, "exports/production/", DAY, max_message_chars=8000)
    assert raw.set_aside == [] and len(raw.logs) == 1200 and len(raw.users) == 120
    snap = sanitize_snapshot(raw.users, raw.logs, ColumnPolicy(), Pseudonymizer(KEY))
    assert len(snap.logs) == 1200 and snap.stats.by_entity[PHONE] > 100


def test_phone_numbers_found_in_windows_are_the_ones_found_in_the_whole_line(sample):
    """The sanitizer runs phonenumbers' matcher only around digit runs (its main cost): on every
    line of the sample that must find exactly what the whole-line matcher finds."""
    _, logs, _ = sample
    phone = next(r for r in pattern_recognizers() if r.name == "PhoneRecognizer")
    windowed = Sanitizer(KnownValues(), [phone])
    differ = []
    for text in logs["text"]:
        whole = sorted((r.start, r.end) for r in phone.analyze(text, phone.supported_entities, None) if r.score > 0)
        mine = sorted((s.start, s.end) for s in windowed.spans(text))
        if whole != mine:
            differ.append((whole, mine))
    assert len([t for t in logs["text"] if phone.analyze(t, phone.supported_entities, None)]) > 200
    assert differ == []
