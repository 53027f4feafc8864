"""Uploads become searchable through events, end to end: the local watcher (a separate process)
announces a dropped file, the deployment trigger starts `ingest-on-upload` on a real process
worker, and the drain brings it into the index. Dropping the same bytes again embeds nothing."""

from __future__ import annotations

import json
import time

import pytest


pytestmark = [pytest.mark.slow]


def drain_runs(stack):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with stack.client() as client:
        dep = client.read_deployment_by_name("ingest-on-upload/ingest-on-upload")
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])))


def rounds_of(stack, run) -> list[dict]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with stack.client() as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), key=ArtifactFilterKey(any_=["ingest-on-upload"])))
    assert arts, f"no ingest-on-upload table on run {run.name} ({run.state.name if run.state else None})"
    return json.loads(arts[0].data)


def rows_for(stack, key: str) -> list[dict]:
    from spotline.index.lance import LanceIndex

    index = stack.home / "index"
    if not index.exists():
        return []
    try:
        return [r for r in LanceIndex(index, "spotline-chunks").all_records() if r["source_uri"].endswith(key)]
    except Exception:  # the table does not exist yet
        return []


@pytest.mark.timeout(600)
def test_a_dropped_file_becomes_searchable_and_the_same_bytes_again_embed_nothing(stack):
    key = f"corpus/uploads-{time.time_ns()}/sso-setup.md"
    text = "# Single sign-on with Okta\n\nOpen Settings, choose Security, then SAML. Paste the Okta metadata URL.\n"
    stack.start_watcher(interval_s=1)
    try:
        before = {r.id for r in drain_runs(stack)}
        path = stack.home / "store" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        dropped = time.monotonic()
        path.write_text(text)
        deadline = time.monotonic() + 300
        while not rows_for(stack, key):
            assert time.monotonic() < deadline, (stack.home / "watcher.log").read_text()[-2000:]
            time.sleep(0.5)
        print(f"dropped -> searchable: {time.monotonic() - dropped:.1f} s")
        first = [r for r in drain_runs(stack) if r.id not in before]
        assert len(first) == 1
        done = stack.wait(first[0].id, lambda r: r.state.is_final(), 120, "the drain run to finish")
        assert done.state.is_completed(), done.state
        assert rounds_of(stack, done)[0]["new"] == 1 and rounds_of(stack, done)[0]["chunks_embedded"] >= 1

        time.sleep(1.1)
        path.write_text(text)  # a re-upload: a new version stamp, the same bytes
        deadline = time.monotonic() + 240
        while True:
            again = [r for r in drain_runs(stack) if r.id not in before | {done.id}]
            if again and again[0].state and again[0].state.is_final():
                break
            assert time.monotonic() < deadline, "no run for the re-upload"
            time.sleep(1)
        assert again[0].state.is_completed()
        assert sum(r["chunks_embedded"] for r in rounds_of(stack, again[0])) == 0
        assert sum(r["changed"] + r["unchanged"] for r in rounds_of(stack, again[0])) == 1
    finally:
        stack.kill("watcher")


@pytest.mark.timeout(900)
def test_a_burst_of_500_uploads_starts_a_handful_of_runs_and_every_object_becomes_searchable(stack):
    stack.start_watcher(interval_s=1)
    try:
        before = {r.id for r in drain_runs(stack)}
        folder = f"corpus/burst-{time.time_ns()}/"
        keys = [f"{folder}note-{i:03d}.md" for i in range(500)]
        started = time.monotonic()
        for i, key in enumerate(keys):  # 500 objects inside a minute (here: as fast as the disk takes them)
            path = stack.home / "store" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# Note {i}\n\nCustomer note {i} about workspace {i * 7919 % 10007} and its exports.\n")
        assert time.monotonic() - started < 60
        deadline = time.monotonic() + 600
        while True:
            indexed = {r["source_uri"].split("/store/", 1)[-1] for r in rows_for(stack, "") if folder in r["source_uri"]}
            if len(indexed) == 500:
                break
            assert time.monotonic() < deadline, f"{len(indexed)} of 500 searchable"
            time.sleep(2)
        print(f"500 uploads -> all searchable in {time.monotonic() - started:.0f} s")
        runs = [r for r in drain_runs(stack) if r.id not in before]
        for r in runs:
            stack.wait(r.id, lambda x: x.state.is_final(), 300, "the drain runs to finish")
        runs = [r for r in drain_runs(stack) if r.id not in before]
        started_runs = [r for r in runs if r.run_count > 0]
        print(f"flow runs the burst started: {len(started_runs)} of {len(runs)} created")
        assert 1 <= len(started_runs) <= 3
        assert all(r.state.is_completed() for r in runs), [r.state for r in runs]
        assert sum(row["keys"] for r in started_runs for row in rounds_of(stack, r)) >= 500
    finally:
        stack.kill("watcher")
