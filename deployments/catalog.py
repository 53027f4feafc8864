"""Every Spotline deployment and work pool, in one list.

This list is the source of truth. ``python -m deployments apply`` puts it on a Prefect server
(pools, deployments, limits, blocks), ``python -m deployments prefect-yaml`` writes prefect.yaml
from it (a test fails when the committed file drifts), and ``deployments/serve_local.py`` serves
the same deployments from one process. A new pipeline adds its entries here and nowhere else.

A deployment names a *pool role*, not a pool: ``main`` runs on Fargate Spot in AWS and on the
``spotline-local`` process pool on a laptop; ``fallback`` (plain Fargate on demand; a second
process pool locally) is where a run goes after too many Spot interruptions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from deployments import ecs
from runtime.recovery import FALLBACK_SUFFIX, FALLBACK_TAG, RECOVERABLE_TAG
from spotline.settings import PersonaSettings

Target = Literal["local", "aws"]
Role = Literal["main", "fallback"]

# Where the code lives when a worker runs a flow: this checkout locally; the image's copy on ECS
# (infra/README.md: the image puts the repository at /opt/spotline).
IMAGE_CODE_DIR = "/opt/spotline"
# Every deployment made from this list carries it: apply deletes tagged deployments the list dropped.
MANAGED_TAG = "managed-by:spotline"


def _process_template() -> dict[str, Any]:
    """Prefect's process template, started like an ECS task: `prefect flow-run execute` (the
    supervisor that turns SIGTERM into a reschedule of the same run) instead of the engine itself."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = "prefect flow-run execute"
    # A dict here is merged under each deployment's own env instead of being replaced by it.
    template["job_configuration"]["env"] = {"PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule"}
    return template


@dataclass(frozen=True)
class Pool:
    name: str
    type: str  # Prefect worker type: "process" or "ecs"
    description: str
    base_job_template: Callable[[], dict[str, Any]]

    def template(self, heartbeat_s: int) -> dict[str, Any]:
        """The pool's base job template with the flow-run heartbeat interval the automations expect."""
        template = self.base_job_template()
        env = template["job_configuration"].setdefault("env", {})
        env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(heartbeat_s)
        return template


POOLS: dict[Target, dict[Role, Pool]] = {
    "local": {
        "main": Pool("spotline-local", "process", "Local mode: flows run as processes on this machine.",
                     _process_template),
        "fallback": Pool("spotline-local-fallback", "process",
                         "Local stand-in for on-demand capacity: where a run goes after too many interruptions.",
                         _process_template),
    },
    "aws": {
        "main": Pool("spotline-spot", "ecs", "ECS on FARGATE_SPOT: every flow run starts here.",
                     lambda: ecs.job_template("FARGATE_SPOT")),
        "fallback": Pool("spotline-ondemand", "ecs",
                         "ECS on plain FARGATE: runs interrupted too often on Spot finish here.",
                         lambda: ecs.job_template("FARGATE")),
    },
}


@dataclass(frozen=True)
class Deployment:
    name: str
    entrypoint: str  # "flows/<file>.py:<flow function>"
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str = "UTC"
    triggers: tuple[dict[str, Any], ...] = ()  # Prefect deployment triggers, as prefect.yaml spells them
    concurrency: int | None = None  # runs of this deployment at once (None: no limit)
    collision: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"
    role: Role = "main"
    cpu: int = 1024  # Fargate task size (1024 = 1 vCPU); also the local embedding worker count
    memory: int = 2048
    job_variables: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    # Interrupted runs resume by themselves (runtime/recovery.py): this deployment gets a twin on
    # the fallback pool, `<name>-ondemand`, where a run goes after too many interruptions.
    recoverable: bool = True

    def pool(self, target: Target) -> Pool:
        return POOLS[target][self.role]

    def rendered_job_variables(self, target: Target) -> dict[str, Any]:
        """Job variables for the pool's worker type: task size on ECS; the worker count either way."""
        workers = max(1, self.cpu // 1024)
        if target == "aws":
            return {"cpu": self.cpu, "memory": self.memory, "embedding_workers": workers, **self.job_variables}
        env = {"SPOTLINE_EMBEDDING__WORKERS": str(workers), **self.job_variables.get("env", {})}
        return {**self.job_variables, "env": env}


_PERSONAS = PersonaSettings()  # the schedule and export prefix as configured by default (prefect.yaml is rendered from them)

UPLOAD_WINDOW_S = 30  # object events start at most one ingest-on-upload run per window


def upload_trigger(window_s: int) -> dict[str, Any]:
    """The deployment trigger for uploads, as prefect.yaml spells it: the first object event of each
    window starts a run; the run drains the rest of the window's events itself."""
    return {
        "type": "event", "enabled": True,
        "match": {"prefect.resource.id": "spotline.object.*"},
        "expect": ["spotline.object.created", "spotline.object.removed"],
        "posture": "Reactive", "threshold": 1, "within": window_s,
        # `| string`: Prefect renders a one-expression template to JSON to keep its type, and the
        # event's DateTime is not JSON ("InvalidJinja", no run); as a string it is ISO 8601.
        "parameters": {"window_started": "{{ event.occurred | string }}", "window_s": window_s},
    }


def persona_deployments(cfg: PersonaSettings) -> tuple[Deployment, Deployment]:
    """The nightly persona suite and its ad-hoc / export-event twin, scheduled from settings
    (`personas.cron`, `personas.timezone`, `personas.export_prefix`)."""
    return (
        Deployment(
            name="personas-nightly",
            entrypoint="flows/personas.py:personas",
            description="Every night: sanitize yesterday's production export, synthesize personas and tricky "
                        "prompts, publish the versioned suite the staging swarm fires.",
            cron=cfg.cron, timezone=cfg.timezone,
            concurrency=1, collision="ENQUEUE",  # two runs for one date would race for one version
            tags=("personas", "llm"),
        ),
        Deployment(
            name="personas-adhoc",
            entrypoint="flows/personas.py:personas",
            description="Build the persona suite for a given date (parameter day=YYYY-MM-DD), or when an export "
                        "lands: object events under the export prefix; the run waits for its _SUCCESS marker.",
            triggers=({
                "type": "event", "enabled": True,
                "match": {"spotline.key": f"{cfg.export_prefix}*"},
                "expect": ["spotline.object.created"],
                "posture": "Reactive", "threshold": 1, "within": 0,
                "parameters": {"export_key": "{{ event.resource['spotline.key'] }}"},
            },),
            concurrency=1,
            tags=("personas", "llm", "events"),
        ),
    )


DEPLOYMENTS: tuple[Deployment, ...] = (
    Deployment(
        name="ingest-nightly",
        entrypoint="flows/ingest.py:ingest",
        description="Full sync of the corpus prefix every night; unchanged documents cost nothing.",
        parameters={"full_sync": True},
        cron="15 2 * * *",
        concurrency=1,  # two full syncs of one index never overlap
        tags=("ingest",),
    ),
    Deployment(
        name="ingest-adhoc",
        entrypoint="flows/ingest.py:ingest",
        description="Ingest a prefix or one key on demand (Run from the UI, or `prefect deployment run`).",
        tags=("ingest",),
    ),
    Deployment(
        name="ingest-on-upload",
        entrypoint="flows/ingest_on_upload.py:ingest_on_upload",
        description="Started by object events (S3 via the SQS relay, or the local watcher): drains every "
                    "pending upload and removal into the index; one run per burst.",
        triggers=(upload_trigger(UPLOAD_WINDOW_S),),
        concurrency=1,  # one drain at a time; a window that fires meanwhile waits, then finds little to do
        tags=("ingest", "events"),
    ),
    *persona_deployments(_PERSONAS),
    Deployment(
        name="swarm",
        entrypoint="flows/swarm.py:swarm",
        description="Release gate: fire the persona suite at staging, grade every answer, pass / fail / "
                    "inconclusive. Started by spotline.staging.deployed (smoke for branches, full for main) "
                    "and spotline.model.promoted, or ad hoc.",
        triggers=(
            {"name": "swarm-on-staging-deployed", "type": "event", "enabled": True,
             "match": {"prefect.resource.id": "spotline.staging.*"},
             "expect": ["spotline.staging.deployed"], "posture": "Reactive", "threshold": 1, "within": 0,
             "parameters": {"target_url": "{{ event.payload.target }}", "branch": "{{ event.payload.branch }}",
                            "tier": "auto"}},
            {"name": "swarm-on-model-promoted", "type": "event", "enabled": True,
             "match": {"prefect.resource.id": "spotline.model.*"},
             "expect": ["spotline.model.promoted"], "posture": "Reactive", "threshold": 1, "within": 0,
             "parameters": {"tier": "full"}},
        ),
        cpu=512, memory=1024,  # waits for its shards; embeds nothing itself
        tags=("swarm", "events"),
    ),
    Deployment(
        name="swarm-shard",
        entrypoint="flows/swarm.py:swarm_shard",
        description="One shard of a swarm (started by the swarm flow through run_deployment): fires its prompts "
                    "and grades the answers; resumes without re-sending or re-judging.",
        tags=("swarm",),
    ),
    Deployment(
        name="feedback-intake",
        entrypoint="flows/feedback.py:feedback_intake",
        description="Every 15 minutes: drain thumbs-down corrections from the queue into the scrubbed feedback "
                    "dataset; emits spotline.feedback.threshold_reached when enough new corrections accumulated.",
        cron="*/15 * * * *",
        concurrency=1, collision="CANCEL_NEW",  # one drain at a time (the intake also holds a lease)
        cpu=512, memory=1024,
        tags=("finetune", "events"),
    ),
    Deployment(
        name="finetune",
        entrypoint="flows/finetune.py:finetune",
        description="LoRA fine-tune of the champion on accumulated corrections, checkpointed to the object store, "
                    "evaluated against the champion, promoted only if better. Started by "
                    "spotline.feedback.threshold_reached, or ad hoc.",
        triggers=({"name": "finetune-on-threshold", "type": "event", "enabled": True,
                   "match": {"prefect.resource.id": "spotline.feedback.*"},
                   "expect": ["spotline.feedback.threshold_reached"], "posture": "Reactive", "threshold": 1,
                   "within": 0, "parameters": {"reason": "{{ event.payload.new_corrections }} new corrections"}},),
        # One training at a time: a second trigger while one runs is dropped; the next intake run
        # emits again if the corrections are still unused.
        concurrency=1, collision="CANCEL_NEW",
        # CPU is enough for 270M (docs/finetune.md): 2 vCPU / 8 GiB on Fargate Spot. A GPU is a job
        # variable away on an EC2 capacity provider (docs/finetune.md: "GPU").
        cpu=2048, memory=8192,
        tags=("finetune", "events"),
    ),
    Deployment(
        name="prompt-gate",
        entrypoint="flows/prompt_eval.py:prompt_eval",
        description="Golden-set gate for prompts/*.yaml on the default route; fails below the recorded baseline.",
        parameters={"use": "default"},
        tags=("llm",),
    ),
)




def fallback_twin(d: Deployment) -> Deployment:
    """The same deployment on the fallback pool: no schedule or triggers, started only by recovery."""
    return dataclasses.replace(d, name=d.name + FALLBACK_SUFFIX, cron=None, triggers=(), role="fallback",
                               description=f"{d.description} (on-demand fallback: started by recovery only)",
                               tags=(*d.tags, FALLBACK_TAG), recoverable=True)


# Picks up crashed runs (a lost host, a SIGKILL) and decides: resume, move to on-demand, or stop.
RECOVERY = Deployment(
    name="recover-interrupted",
    entrypoint="flows/recover.py:recover_interrupted",
    description="Started by the spotline-recover automation when a recoverable run crashes: resumes it "
                "under the same id, moves it to the on-demand pool past its budget, or stops it for good.",
    cpu=256, memory=512,  # a few API calls: the smallest Fargate task
    recoverable=False,
    tags=("operations",),
)




def recovery_sweep(cron: str) -> Deployment:
    """The sweep behind spotline-recover: a crash whose event the server never evaluated is still
    recovered, one sweep after the grace (runtime/recovery.py has the case that needs it)."""
    return Deployment(
        name="recover-missed",
        entrypoint="flows/recover.py:recover_missed",
        description="On a schedule: recovers recoverable runs still Crashed after the grace, which the "
                    "spotline-recover automation never reached (a crash event the server dropped).",
        cron=cron,
        concurrency=1, collision="CANCEL_NEW",  # a sweep that finds one still running is dropped, not queued
        cpu=256, memory=512,
        recoverable=False,
        tags=("operations",),
    )


def all_deployments(sweep_cron: str | None = None, personas: PersonaSettings | None = None) -> tuple[Deployment, ...]:
    """The catalog as applied: every deployment, the fallback twins, and the recovery deployments.
    ``sweep_cron``: the recover-missed schedule (settings ``prefect.recovery_sweep_cron``);
    ``personas``: the persona settings whose schedule and export prefix the persona deployments use."""
    from spotline.settings import PrefectSettings

    listed = DEPLOYMENTS
    if personas is not None:
        mine = {d.name: d for d in persona_deployments(personas)}
        listed = tuple(mine.get(d.name, d) for d in DEPLOYMENTS)
    twins = tuple(fallback_twin(d) for d in listed if d.recoverable)
    return (*listed, *twins, RECOVERY, recovery_sweep(sweep_cron or PrefectSettings().recovery_sweep_cron))


def tags_of(d: Deployment) -> list[str]:
    return sorted({*d.tags, MANAGED_TAG, *([RECOVERABLE_TAG] if d.recoverable else [])})


def prefect_yaml(target: Target = "aws") -> dict[str, Any]:
    """prefect.yaml for `prefect deploy --all`, rendered from the list (committed; a test checks drift)."""
    code_dir = IMAGE_CODE_DIR if target == "aws" else "{{ $SPOTLINE_CODE_DIR }}"
    out = []
    for d in all_deployments():
        entry: dict[str, Any] = {"name": d.name, "description": d.description, "entrypoint": d.entrypoint}
        if d.parameters:
            entry["parameters"] = dict(d.parameters)
        if d.cron:
            entry["schedules"] = [{"cron": d.cron, "timezone": d.timezone, "active": True}]
        if d.triggers:
            entry["triggers"] = [dict(t) for t in d.triggers]
        if d.concurrency:
            entry["concurrency_limit"] = {"limit": d.concurrency, "collision_strategy": d.collision}
        entry["work_pool"] = {"name": d.pool(target).name, "job_variables": d.rendered_job_variables(target)}
        entry["tags"] = tags_of(d)
        out.append(entry)
    import prefect

    return {
        "name": "spotline",
        "prefect-version": prefect.__version__,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": code_dir}}],
        "deployments": out,
    }
