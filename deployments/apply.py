"""The one setup command: put the catalog on a Prefect server, idempotently.

    python -m deployments apply [--target local|aws]

Work pools (with their base job templates), global concurrency limits (the index writer slot,
the LLM providers' limits), blocks (result storage on S3 in aws), deployments (schedules,
concurrency, job variables; each recoverable one with its on-demand twin; the recover-missed
sweep on the schedule the settings give) and the recovery automations (deployments/automations.py)
are read first and written only when they differ from the catalog, so a second run changes
nothing and says so. Deployments the catalog no longer lists, but that
this command made (tag ``managed-by:spotline``), are deleted: the server never drifts from code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    DeploymentScheduleCreate,
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema

from deployments.catalog import IMAGE_CODE_DIR, MANAGED_TAG, POOLS, Deployment, Target, all_deployments, tags_of
from spotline.settings import PROJECT_ROOT, Settings


@dataclass(frozen=True)
class Change:
    kind: str  # "work pool", "limit", "block", "deployment"
    name: str
    action: str  # "created", "updated", "unchanged", "deleted"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action:9} {self.kind} {self.name}" + (f" ({self.detail})" if self.detail else "")


def apply(target: Target, settings: Settings) -> list[Change]:
    """Everything the catalog says, on the server PREFECT_API_URL names. Returns what changed."""
    with get_client(sync_client=True) as client:
        changes = [*_pools(client, target, settings), *_limits(client, settings), *_blocks(target, settings)]
        changes += _deployments(client, target, settings)
        changes += _automations(client, settings)
    return changes


# ---------------------------------------------------------------- work pools

def _pools(client: SyncPrefectClient, target: Target, settings: Settings) -> list[Change]:
    changes = []
    for pool in POOLS[target].values():
        template = pool.template(settings.prefect.heartbeat_s)
        try:
            have = client.read_work_pool(pool.name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool.name, type=pool.type, description=pool.description,
                                                   base_job_template=template))
            changes.append(Change("work pool", pool.name, "created", pool.type))
            continue
        if have.type != pool.type:
            raise RuntimeError(f"work pool {pool.name!r} exists with type {have.type!r}, the catalog says "
                               f"{pool.type!r}: delete it (`prefect work-pool delete {pool.name}`) and apply again")
        if have.description == pool.description and have.base_job_template == template:
            changes.append(Change("work pool", pool.name, "unchanged"))
            continue
        client.update_work_pool(pool.name, WorkPoolUpdate(description=pool.description, base_job_template=template))
        changes.append(Change("work pool", pool.name, "updated"))
    return changes


# ---------------------------------------------------------------- limits

def desired_limits(settings: Settings) -> dict[str, tuple[int, float]]:
    """Global concurrency limits by name -> (slots, slot decay per second; 0 for a plain limit)."""
    from runtime.limits import LOCAL_PROVIDERS, limit_name
    from spotline.llm.limits import DEFAULT_CONCURRENCY, burst_for

    llm = settings.llm
    out: dict[str, tuple[int, float]] = {f"spotline-index-{settings.index.name}": (1, 0.0)}
    for provider in sorted((set(llm.concurrency) | {m.provider for m in llm.models.values()}) - LOCAL_PROVIDERS):
        out[limit_name(provider)] = (llm.concurrency.get(provider, DEFAULT_CONCURRENCY), 0.0)
    for provider, per_minute in llm.rate_per_minute.items():
        if per_minute and provider not in LOCAL_PROVIDERS:
            out[limit_name(provider) + "-rate"] = (burst_for(per_minute), per_minute / 60.0)
    return out


def _limits(client: SyncPrefectClient, settings: Settings) -> list[Change]:
    changes = []
    for name, (slots, decay) in desired_limits(settings).items():
        try:
            have = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots, slot_decay_per_second=decay))
            changes.append(Change("limit", name, "created", f"{slots} slot(s)"))
            continue
        if have.limit == slots and float(have.slot_decay_per_second or 0.0) == decay and have.active:
            changes.append(Change("limit", name, "unchanged"))
            continue
        client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=slots, slot_decay_per_second=decay, active=True))
        changes.append(Change("limit", name, "updated", f"{slots} slot(s)"))
    return changes


# ---------------------------------------------------------------- blocks

def _blocks(target: Target, settings: Settings) -> list[Change]:
    return [*_pseudonym_key(settings), *_results_block(settings)]


def _pseudonym_key(settings: Settings) -> list[Change]:
    """The persona sanitizer's HMAC key, when settings name a Prefect Secret block: created once with
    32 random bytes, never overwritten (a new key would give every user a new pseudonym)."""
    ref = settings.personas.pseudonym_key
    if not ref.startswith("prefect:"):
        return []  # Secrets Manager, SSM or env: created where it lives (infra/README.md)
    import secrets

    from prefect.blocks.system import Secret

    name = ref.partition(":")[2]
    try:
        Secret.load(name)
        return [Change("block", f"secret/{name}", "unchanged")]
    except ValueError:  # missing
        Secret(value=secrets.token_urlsafe(32)).save(name)
        return [Change("block", f"secret/{name}", "created")]


def _results_block(settings: Settings) -> list[Change]:
    if settings.store.kind != "s3":
        return []  # local mode keeps results in a folder: no block to save
    from prefect_aws import S3Bucket

    from runtime.results import result_storage_block

    want = result_storage_block(settings)
    name = settings.prefect.results_block
    try:
        have = S3Bucket.load(name)
    except ValueError:  # Prefect raises ValueError for a missing block document
        have = None
    if have is not None and _block_fields(have) == _block_fields(want):
        return [Change("block", f"s3-bucket/{name}", "unchanged")]
    want.save(name, overwrite=True)
    return [Change("block", f"s3-bucket/{name}", "created" if have is None else "updated")]


def _block_fields(block) -> dict[str, Any]:
    creds = block.credentials
    return {
        "bucket": block.bucket_name, "folder": block.bucket_folder, "region": creds.region_name,
        "endpoint": creds.aws_client_parameters.endpoint_url,
        "key_id": creds.aws_access_key_id,
        "secret": creds.aws_secret_access_key.get_secret_value() if creds.aws_secret_access_key else None,
    }


# ---------------------------------------------------------------- deployments

def _flow(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def desired_deployment(d: Deployment, target: Target) -> dict[str, Any]:
    """The deployment's fields as the server stores them (what apply compares and writes)."""
    flow = _flow(d.entrypoint)
    code_dir = IMAGE_CODE_DIR if target == "aws" else str(PROJECT_ROOT)
    return {
        "flow_name": flow.name,
        "description": d.description,
        "entrypoint": d.entrypoint,
        "path": code_dir,
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": code_dir}}],
        "parameters": dict(d.parameters),
        "parameter_openapi_schema": parameter_schema(flow.fn).model_dump_for_openapi(),
        "enforce_parameter_schema": True,
        "work_pool_name": d.pool(target).name,
        "job_variables": d.rendered_job_variables(target),
        "tags": tags_of(d),
        "concurrency": (d.concurrency, d.collision) if d.concurrency else None,
        "schedules": [(d.cron, d.timezone, True)] if d.cron else [],
    }


def _have(dep) -> dict[str, Any]:
    gcl = getattr(dep, "global_concurrency_limit", None)
    options = getattr(dep, "concurrency_options", None)
    limit = gcl.limit if gcl is not None else None
    return {
        "description": dep.description,
        "entrypoint": dep.entrypoint,
        "path": dep.path,
        "pull_steps": dep.pull_steps,
        "parameters": dep.parameters,
        "parameter_openapi_schema": dep.parameter_openapi_schema,
        "enforce_parameter_schema": dep.enforce_parameter_schema,
        "work_pool_name": dep.work_pool_name,
        "job_variables": dep.job_variables,
        "tags": sorted(dep.tags),
        "concurrency": (limit, options.collision_strategy.value if options else "ENQUEUE") if limit else None,
        "schedules": [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules
                      if isinstance(s.schedule, CronSchedule)],
    }


def apply_deployment(client: SyncPrefectClient, d: Deployment, target: Target) -> Change:
    """One deployment onto the server, written only when it differs from what is there."""
    want = desired_deployment(d, target)
    full_name = f"{want['flow_name']}/{d.name}"
    try:
        have = _have(client.read_deployment_by_name(full_name))
    except ObjectNotFound:
        have = None
    compared = {k: v for k, v in want.items() if k != "flow_name"}
    if have == compared:
        return Change("deployment", full_name, "unchanged")
    differs = sorted(k for k in compared if have is not None and have.get(k) != compared[k])
    flow_id = client.create_flow_from_name(want["flow_name"])
    limit, collision = want["concurrency"] or (None, None)
    client.create_deployment(  # an upsert on (flow, name)
        flow_id=flow_id, name=d.name, description=d.description, entrypoint=d.entrypoint,
        path=want["path"], pull_steps=want["pull_steps"], parameters=want["parameters"],
        parameter_openapi_schema=want["parameter_openapi_schema"], enforce_parameter_schema=True,
        work_pool_name=want["work_pool_name"], job_variables=want["job_variables"], tags=want["tags"],
        concurrency_limit=limit,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy(collision))
        if limit else None,
        schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron=c, timezone=tz), active=active)
                   for c, tz, active in want["schedules"]],
    )
    return Change("deployment", full_name, "created" if have is None else "updated",
                  f"{d.pool(target).name}" + (f"; changed: {', '.join(differs)}" if differs else ""))


def _deployments(client: SyncPrefectClient, target: Target, settings: Settings) -> list[Change]:
    changes = [apply_deployment(client, d, target) for d in all_deployments(settings.prefect.recovery_sweep_cron, settings.personas)]
    listed = {c.name for c in changes}
    for dep in client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED_TAG]))):
        flow_name = client.read_flow(dep.flow_id).name
        if f"{flow_name}/{dep.name}" not in listed:
            client.delete_deployment(dep.id)
            changes.append(Change("deployment", f"{flow_name}/{dep.name}", "deleted", "no longer in the catalog"))
    return changes


# ---------------------------------------------------------------- automations

def _normal(value: Any) -> Any:
    """JSON with sets (serialised as lists in no fixed order) sorted, for comparing."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return sorted(items) if all(isinstance(v, str) for v in items) else items
    return value


def _automation_fields(a) -> dict[str, Any]:
    return _normal({"description": a.description, "enabled": a.enabled,
                    "trigger": a.trigger.model_dump(mode="json", exclude={"id"}),
                    "actions": [x.model_dump(mode="json") for x in a.actions]})


def _automations(client: SyncPrefectClient, settings: Settings) -> list[Change]:
    from deployments.automations import automations, deployment_trigger
    from deployments.catalog import RECOVERY

    def deployment_id(d: Deployment):
        return client.read_deployment_by_name(f"{_flow(d.entrypoint).name}/{d.name}").id

    wanted = automations(settings.prefect.heartbeat_s, deployment_id(RECOVERY))
    wanted += [deployment_trigger(d.name, deployment_id(d), spec) for d in all_deployments(settings.prefect.recovery_sweep_cron, settings.personas)
                for spec in d.triggers]
    changes = []
    for want in wanted:
        have = client.read_automations_by_name(want.name)
        if len(have) == 1 and _automation_fields(have[0]) == _automation_fields(want):
            changes.append(Change("automation", want.name, "unchanged"))
            continue
        for old in have:  # a changed automation is replaced whole (and duplicates by name removed)
            client.delete_automation(old.id)
        client.create_automation(want)
        changes.append(Change("automation", want.name, "updated" if have else "created"))
    return changes
