"""The deployment catalog is the one list: prefect.yaml is rendered from it, every entry loads,
and `python -m deployments apply` puts it on a real Prefect server (loopback) idempotently."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest
import yaml

from deployments import catalog
from deployments.apply import MANAGED_TAG, _flow, apply
from tests.conftest import ROOT


def test_prefect_yaml_is_exactly_what_the_catalog_renders():
    from deployments.prefect_yaml import check

    assert check() is None


def test_a_drifted_prefect_yaml_is_caught(tmp_path):
    from deployments.prefect_yaml import check

    drifted = tmp_path / "prefect.yaml"
    drifted.write_text((ROOT / "prefect.yaml").read_text().replace("15 2 * * *", "0 3 * * *"))
    assert "drifted" in check(drifted)


def test_every_catalog_entry_loads_its_flow_and_its_parameters_exist():
    from prefect.client.schemas.schedules import CronSchedule

    names = [d.name for d in catalog.all_deployments()]
    assert len(names) == len(set(names))
    for d in catalog.all_deployments():
        flow = _flow(d.entrypoint)
        assert set(d.parameters) <= set(inspect.signature(flow.fn).parameters), d.name
        if d.cron:
            CronSchedule(cron=d.cron, timezone=d.timezone)  # raises on a bad expression
        for target in ("local", "aws"):
            assert d.pool(target).name in {p.name for p in catalog.POOLS[target].values()}
    rendered = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert [d["name"] for d in rendered["deployments"]] == names


def _snapshot(client) -> dict:
    """What the server holds for everything apply manages, including update times."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    deps = client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED_TAG])))
    pools = [p for p in client.read_work_pools() if p.name.startswith("spotline-")]
    limits = [lim for lim in client.read_global_concurrency_limits(limit=200) if lim.name.startswith("spotline-")]
    return {
        "deployments": {d.name: (d.updated, [s.id for s in d.schedules], d.work_pool_name, d.job_variables)
                        for d in deps},
        "pools": {p.name: (p.updated, p.base_job_template) for p in pools},
        "limits": {lim.name: (lim.updated, lim.limit) for lim in limits},
    }


@pytest.mark.usefixtures("prefect_api")
def test_apply_creates_everything_then_a_second_run_changes_nothing(res):
    from prefect.client.orchestration import get_client

    first = apply("local", res.settings)
    kinds = {(c.kind, c.name) for c in first}
    assert {("work pool", "spotline-local"), ("work pool", "spotline-local-fallback")} <= kinds
    assert ("limit", f"spotline-index-{res.index.name}") in kinds
    assert {c.name.split("/")[1] for c in first if c.kind == "deployment"} == {d.name for d in catalog.all_deployments()}
    assert {c.name for c in first if c.kind == "automation"} == {"spotline-heartbeat-lost", "spotline-recover",
                                                                 "ingest-on-upload-trigger", "personas-adhoc-trigger",
                                                                 "swarm-on-staging-deployed", "swarm-on-model-promoted",
                                                                 "finetune-on-threshold"}
    # The pseudonym key is made once (32 random bytes) and never replaced: a new key, new pseudonyms.
    assert ("block", "secret/spotline-pseudonym-key") in kinds
    with get_client(sync_client=True) as client:
        before = _snapshot(client)
        second = apply("local", res.settings)
        after = _snapshot(client)
        nightly = client.read_deployment_by_name("ingest-documents/ingest-nightly")
    assert [c for c in second if c.action != "unchanged"] == []
    assert after == before  # not even a rewrite with the same values: update times and schedule ids stay
    assert nightly.work_pool_name == "spotline-local" and nightly.parameters == {"full_sync": True}
    assert [s.schedule.cron for s in nightly.schedules] == ["15 2 * * *"]
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.job_variables["env"]["SPOTLINE_EMBEDDING__WORKERS"] == "1"


@pytest.mark.usefixtures("prefect_api")
def test_apply_changes_only_what_the_catalog_changed_and_drops_what_it_no_longer_lists(res, monkeypatch):
    from prefect.client.orchestration import get_client

    apply("local", res.settings)
    edited = [dataclasses.replace(d, cron="0 3 * * *") if d.name == "ingest-nightly" else d
              for d in catalog.all_deployments() if not d.name.startswith("prompt-gate")]
    monkeypatch.setattr("deployments.apply.all_deployments", lambda *_: tuple(edited))
    changes = {(c.name, c.action) for c in apply("local", res.settings) if c.action != "unchanged"}
    assert changes == {("ingest-documents/ingest-nightly", "updated"), ("prompt-eval/prompt-gate", "deleted"),
                       ("prompt-eval/prompt-gate-ondemand", "deleted")}
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("ingest-documents/ingest-nightly")
        assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"]
    monkeypatch.undo()
    apply("local", res.settings)  # back to the catalog for the other tests


@pytest.mark.usefixtures("prefect_api")
def test_apply_for_aws_creates_the_two_ecs_pools_and_sizes_the_tasks(res):
    from prefect.client.orchestration import get_client

    from deployments import ecs

    try:
        apply("aws", res.settings)
        with get_client(sync_client=True) as client:
            spot, ondemand = client.read_work_pool("spotline-spot"), client.read_work_pool("spotline-ondemand")
            nightly = client.read_deployment_by_name("ingest-documents/ingest-nightly")
        assert spot.type == ondemand.type == "ecs"
        assert spot.base_job_template == catalog.POOLS["aws"]["main"].template(res.settings.prefect.heartbeat_s)
        assert spot.base_job_template["variables"] == ecs.job_template("FARGATE_SPOT")["variables"]
        assert spot.base_job_template["job_configuration"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
        assert ondemand.base_job_template["variables"]["properties"]["launch_type"]["default"] == "FARGATE"
        assert nightly.work_pool_name == "spotline-spot" and nightly.path == catalog.IMAGE_CODE_DIR
        assert {k: nightly.job_variables[k] for k in ("cpu", "memory", "embedding_workers")} == \
            {"cpu": 1024, "memory": 2048, "embedding_workers": 1}
        assert [c for c in apply("aws", res.settings) if c.action != "unchanged"] == []
        twin = client_read("ingest-documents/ingest-nightly-ondemand")
        assert twin.work_pool_name == "spotline-ondemand" and twin.schedules == []
    finally:
        apply("local", res.settings)


def client_read(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


@pytest.mark.usefixtures("prefect_api")
def test_local_pools_start_runs_under_the_rescheduling_supervisor_with_heartbeats(res):
    from prefect.client.orchestration import get_client

    apply("local", res.settings)
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("spotline-local")
        recover = client.read_automations_by_name("spotline-recover")[0]
        recovery = client.read_deployment_by_name("recover-interrupted/recover-interrupted")
    assert pool.base_job_template["variables"]["properties"]["command"]["default"] == "prefect flow-run execute"
    env = pool.base_job_template["job_configuration"]["env"]
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(res.settings.prefect.heartbeat_s)
    assert recover.actions[0].deployment_id == recovery.id
    assert "spotline-recoverable" not in recovery.tags  # recovery never recovers itself


@pytest.mark.usefixtures("prefect_api")
def test_the_server_schedules_runs_for_the_nightly_deployment(res):
    """The scheduler service inserts the cron's next runs (SQLAlchemy 2.1 broke exactly this)."""
    import time

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.orchestration import get_client

    apply("local", res.settings)
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["ingest-nightly"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
            if runs:
                break
            assert time.monotonic() < deadline, "the scheduler created no run for the nightly cron"
            time.sleep(1)
    assert all(r.expected_start_time.hour == 2 and r.expected_start_time.minute == 15 for r in runs)


def test_apply_without_a_server_says_what_is_missing():
    env = {k: v for k, v in __import__("os").environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([sys.executable, "-m", "deployments", "apply"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "PREFECT_API_URL is not set" in proc.stderr


def test_the_persona_deployments_take_their_schedule_and_export_prefix_from_settings():
    from spotline.settings import PersonaSettings

    cfg = PersonaSettings(cron="0 5 * * *", timezone="America/New_York", export_prefix="dumps/prod/")
    listed = {d.name: d for d in catalog.all_deployments(personas=cfg)}
    nightly, adhoc = listed["personas-nightly"], listed["personas-adhoc"]
    assert (nightly.cron, nightly.timezone) == ("0 5 * * *", "America/New_York")
    assert adhoc.triggers[0]["match"] == {"spotline.key": "dumps/prod/*"}
    assert listed["personas-nightly-ondemand"].cron is None  # the twin is started by recovery only
    defaults = {d.name: d for d in catalog.all_deployments()}
    assert defaults["personas-nightly"].cron == PersonaSettings().cron
