"""Hostile input at the ingest flow's front door: bad keys, symlinks out of the store, a huge text
file beside good ones, stray control bytes and legacy encodings. Each is refused or set aside with
its reason, before or without costing the rest of the run anything."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from flows.ingest import ingest
from spotline.ingestion import pipeline as core
from tests.conftest import ROOT
from tests.ingest.test_ingest_flow import DOCS, put_all, snapshot

pytestmark = pytest.mark.usefixtures("prefect_api")


async def _artifacts(flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def result_files(res) -> set[str]:
    folder = res.settings.store.root / res.settings.layout.prefect_results.strip("/")
    return {p.name for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.parametrize("params, message", [
    ({"key": "../../etc/passwd"}, "'..' segment"),
    ({"key": "/etc/passwd"}, "absolute path"),
    ({"key": "corpus/..\\..\\secret.md"}, "'..' segment"),
    ({"key": "corpus/a\x00b.md"}, "control or invisible formatting character"),
    ({"key": "corpus/line\nbreak.md"}, "control or invisible formatting character"),
    ({"key": "corpus//double.md"}, "empty segment"),
    ({"key": "corpus/invoice\u202egnp.md"}, "invisible formatting character"),  # right-to-left override
    ({"key": "corpus/" + "a" * 1100 + ".md"}, "at most 1024"),
    ({"key": "other/secret.md"}, "outside the source prefix"),
    ({"prefix": "../"}, "'..' segment"),
    ({"prefix": "/etc/"}, "absolute path"),
    ({"prefix": ""}, "outside the source prefix"),
    ({"s3_event": {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "spotline"}, "object": {"key": "corpus%2F..%2F..%2Fetc%2Fpasswd"}}}]}}, "'..' segment"),
])
def test_bad_keys_are_refused_up_front_with_an_artifact_and_nothing_persisted(res, embedder, params, message):
    put_all(res.store, DOCS)
    before = result_files(res)
    state = ingest(**params, return_state=True)
    assert state.is_failed() and message in state.message and state.message.startswith("input rejected:")
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    assert [a.key for a in arts if a.key] == ["ingest-rejected"]
    assert message in next(a.data for a in arts if a.key == "ingest-rejected")
    assert result_files(res) == before, "a refused run persists no result"
    assert embedder.texts == [] and res.index.count() == 0


def test_keys_outside_the_source_prefix_are_accepted_when_settings_allow_it(monkeypatch, res, embedder):
    from tests.conftest import use_settings

    r = use_settings(monkeypatch, res.settings.store.root.parent, SPOTLINE_INGEST__ALLOW_OUTSIDE_SOURCE_PREFIX="true")
    r.__dict__["_embedder"] = embedder
    r.store.put("other/notes.md", b"# Notes\n\nMeeting notes about travel approvals.")
    run = ingest(key="other/notes.md")
    assert run.new == 1


def test_cli_refusal_is_one_line_without_a_traceback(res, prefect_api):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cli.main", "ingest", "--key", "../../etc/passwd"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: input rejected: key '../../etc/passwd' contains a '.' or '..' segment"]
    assert "Traceback" not in proc.stderr + proc.stdout
    # Bytes that are not UTF-8 on the command line: Prefect could not even record such a run.
    proc = subprocess.run([sys.executable, "-m", "cli.main", "ingest", "--key", b"corpus/caf\xe9.md"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: input rejected: key 'corpus/caf\\udce9.md' is not valid UTF-8" in proc.stderr


def test_cli_stops_before_any_work_when_prefect_cannot_be_reached(res, tmp_path):
    from deployments.devserver import free_port

    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api", "PYTHONPATH": str(ROOT),
           "PREFECT_CLIENT_MAX_RETRIES": "0"}
    put_all(res.store, DOCS)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "ingest", "--prefix", "corpus/"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: cannot reach the Prefect API" in proc.stderr and "Nothing was done" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not res.settings.index.path.exists(), "no index was created"


@pytest.mark.slow
def test_cli_without_an_api_url_starts_no_temporary_server_and_says_what_to_do(res, tmp_path):
    import socket

    # Something that is not Prefect holds the project's port: its server cannot start there, and
    # the CLI must neither fall back to Prefect's temporary in-process server nor do any work.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_PORT=str(port), SPOTLINE_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    put_all(res.store, DOCS)
    try:
        proc = subprocess.run([sys.executable, "-m", "cli.main", "ingest", "--prefix", "corpus/"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    finally:
        squatter.close()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: the local Prefect server did not start" in proc.stderr and "Nothing was done" in proc.stderr
    assert "temporary" not in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert not res.settings.index.path.exists(), "no index was created"


def test_symlinks_leaving_the_store_are_set_aside_and_never_read(res, embedder, tmp_path):
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    secret = outside / "passwd.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nsecret-token-value-77\n")
    (outside / "folder" / "more.md").write_text("# More\n\nsecret-token-value-78")
    put_all(res.store, DOCS)
    root = res.settings.store.root
    (root / "corpus" / "passwd.txt").symlink_to(secret)
    (root / "corpus" / "linked").symlink_to(outside / "folder", target_is_directory=True)
    (root / "corpus" / "alias.md").symlink_to(root / "corpus" / "billing" / "refunds.md")  # inside: allowed

    run = ingest(prefix="corpus/")
    reasons = {s["key"]: s["reason"] for s in run.set_aside}
    assert reasons == {"corpus/passwd.txt": "unsafe-link", "corpus/linked": "unsafe-link"}
    texts = " ".join(r["text"] for r in snapshot(res))
    assert "secret-token-value" not in texts and "root:x:0:0" not in texts
    assert any(r["source_uri"] == "corpus/alias.md" for r in snapshot(res))
    assert run.new == len(DOCS) + 1
    # An event naming the link directly is set aside the same way.
    event = ingest(key="corpus/passwd.txt")
    assert [s["reason"] for s in event.set_aside] == ["unsafe-link"]


def test_a_40mb_text_file_is_set_aside_by_tokens_and_the_good_files_beside_it_are_indexed(res, embedder):
    put_all(res.store, DOCS)
    words = ("ledger approval invoice receipt mileage travel policy card refund statement " * 8).encode()
    line = words + b"\n"
    res.store.put("corpus/huge-export.txt", line * (40 * 1024 * 1024 // len(line)))
    run = ingest(prefix="corpus/", batch_documents=2)
    assert run.new == len(DOCS)
    [aside] = run.set_aside
    assert aside["key"] == "corpus/huge-export.txt" and aside["reason"] == "too-large"
    assert "more than 1,000,000 tokens" in aside["detail"]
    assert {r["source_uri"] for r in snapshot(res)} == set(DOCS)
    assert len(embedder.texts) == run.chunks_embedded, "nothing of the huge file was embedded"


def test_a_large_document_streams_in_slices_and_a_rerun_costs_nothing(monkeypatch, res, embedder):
    from tests.conftest import use_settings

    r = use_settings(monkeypatch, res.settings.store.root.parent, SPOTLINE_INGEST__SLICE_CHARS="3000",
                     SPOTLINE_INGEST__LARGE_DOCUMENT_BYTES="20000")
    r.__dict__["_embedder"] = embedder
    put_all(r.store, DOCS)
    sections = [f"## Section {i}\n\nPolicy paragraph {i}: receipts over {i * 10} dollars need a manager's "
                f"approval within {i % 7 + 1} days, and card spend is reconciled weekly." for i in range(400)]
    big = ("# Expense handbook\n\n" + "\n\n".join(sections)).encode()
    assert len(big) > 20000
    r.store.put("corpus/handbook.md", big)
    first = ingest(prefix="corpus/")
    assert first.new == len(DOCS) + 1 and first.failed == 0
    rows = [x for x in snapshot(r) if x["source_uri"] == "corpus/handbook.md"]
    assert sorted(x["chunk_index"] for x in rows) == list(range(len(rows))) and len(rows) > 20
    text = "\n".join(x["text"] for x in sorted(rows, key=lambda x: x["chunk_index"]))
    assert all(f"Policy paragraph {i}:" in text for i in range(400)), "every section is indexed"

    embedder.reset()
    assert ingest(prefix="corpus/", force=True).chunks_embedded == 0, "cached: nothing embedded again"
    # An export without blank lines is one paragraph: it is cut at line breaks into slices too.
    log = "\n".join(f"2026-11-{i % 28 + 1:02d} expense {i} approved by manager {i % 13} for {i * 3} USD"
                    for i in range(1500)).encode()
    r.store.put("corpus/approvals.txt", log)
    assert ingest(prefix="corpus/", batch_documents=50).new == 1
    log_rows = [x for x in snapshot(r) if x["source_uri"] == "corpus/approvals.txt"]
    assert len(log_rows) > 30 and all(len(x["text"]) <= 3000 for x in log_rows)

    edited = big.replace(b"Policy paragraph 399:", b"Revised paragraph 399:")
    r.store.put("corpus/handbook.md", edited)
    embedder.reset()
    run = ingest(prefix="corpus/")
    assert run.changed == 1 and 1 <= len(embedder.texts) <= 2
    rows = [x for x in snapshot(r) if x["source_uri"] == "corpus/handbook.md"]
    assert len({x["doc_hash"] for x in rows}) == 1 and any("Revised paragraph 399" in x["text"] for x in rows)


def test_control_bytes_are_never_stored_and_legacy_encodings_are_decoded_and_reported(res, embedder):
    put_all(res.store, DOCS)
    late_nuls = ("Scanning receipts\n\n" + "Take a photo of the receipt. " * 400 + "\x00\x00 Crop it.\x01\x1b[0m").encode()
    res.store.put("corpus/receipts.txt", late_nuls)
    res.store.put("corpus/cafe.txt", "Café expenses\n\nThe café near the office is a naïve résumé of "
                  "Ångström-level coffee; lunches there are reimbursed up to 12 € per day.".encode("cp1252"))
    state = ingest(prefix="corpus/", return_state=True)
    run = state.result()
    assert run.failed == 0 and run.new == len(DOCS) + 2
    rows = snapshot(res)
    assert not any(ch in r["text"] for r in rows for ch in "\x00\x01\x1b")
    cafe = " ".join(r["text"] for r in rows if r["source_uri"] == "corpus/cafe.txt")
    assert "café" in cafe and "naïve résumé" in cafe and "12 €" in cafe
    [legacy] = run.legacy_encodings
    assert legacy["key"] == "corpus/cafe.txt" and legacy["encoding"]
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    table = json.loads(next(a.data for a in arts if a.key == "ingest-encodings"))
    assert table == [legacy]


def test_core_plan_isolates_large_documents_into_their_own_batches(res):
    from spotline.storage.base import ObjectInfo

    docs = [ObjectInfo(key=f"corpus/{i}.md", uri=f"u{i}", size=s, version="v")
            for i, s in enumerate([10, 5_000_000, 20, 30, 2_000_000, 40])]
    plan = core.SyncPlan(to_process=docs, states={}, unchanged=[], to_delete=[])
    batches = [[d.key for d in b] for b in plan.batches(2, large_bytes=1_000_000)]
    assert batches == [["corpus/0.md", "corpus/2.md"], ["corpus/3.md", "corpus/5.md"], ["corpus/1.md"], ["corpus/4.md"]]
