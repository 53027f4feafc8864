"""The automations Spotline runs on its Prefect server, as code (applied by `python -m deployments apply`).

- ``spotline-heartbeat-lost``: a recoverable flow run that stops sending heartbeats for three
  intervals (SIGKILL, a host that vanished with its worker) is marked Crashed. It is Prefect's
  "detect zombie flows" automation with two fixes: a run rescheduled by SIGTERM (state
  ``AwaitingRetry``) also ends the watch, or the automation would crash the run it just saved; and
  entering Running starts the watch, or a run killed before its first heartbeat would stay
  Running for ever.
- ``spotline-recover``: a recoverable flow run that crashes starts the ``recover-interrupted``
  deployment, which resumes it, moves it to on-demand capacity, or stops it (runtime/recovery.py).
  The budget lives in that flow, not in the automation, so a run that crashes every time ends
  after its budget instead of looping (PrefectHQ/prefect#10211).
Both match only runs tagged ``spotline-recoverable`` (the catalog's pipelines and their twins);
the recovery flow's own runs are not, so recovery never recovers itself.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from runtime.recovery import RECOVERABLE_TAG

HEARTBEAT_LOST = "spotline-heartbeat-lost"
RECOVER = "spotline-recover"
_RUNS = ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"})
_RECOVERABLE = ResourceSpecification({"prefect.resource.id": f"prefect.tag.{RECOVERABLE_TAG}"})


def automations(heartbeat_s: int, recovery_deployment_id: UUID) -> list[AutomationCore]:
    return [
        AutomationCore(
            name=HEARTBEAT_LOST,
            description=f"Mark a recoverable flow run Crashed after {3 * heartbeat_s} s without a heartbeat "
                        "(three missed intervals): its host is gone. spotline-recover then takes over.",
            enabled=True,
            trigger=EventTrigger(
                # Running starts the watch too: a run killed before its first heartbeat is caught.
                after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
                expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                        "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed",
                        "prefect.flow-run.AwaitingRetry"},
                match=_RUNS,
                match_related=_RECOVERABLE,
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=3 * heartbeat_s),
            ),
            actions=[ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"Spotline: no heartbeat for {3 * heartbeat_s} s (three intervals); the host is gone",
            )],
        ),
        AutomationCore(
            name=RECOVER,
            description="When a recoverable flow run crashes, start recover-interrupted for it: resume under the "
                        "same id, re-submit on the on-demand pool past the budget, or stop it for good.",
            enabled=True,
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"},
                match=_RUNS,
                match_related=_RECOVERABLE,
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[RunDeployment(source="selected", deployment_id=recovery_deployment_id,
                                   parameters={"flow_run_id": "{{ event.resource.id }}"})],
        ),
    ]


def deployment_trigger(deployment_name: str, deployment_id: UUID, spec: dict) -> AutomationCore:
    """A catalog trigger (prefect.yaml's shape) as the automation Prefect makes of it."""
    return AutomationCore(
        name=spec.get("name") or f"{deployment_name}-trigger",  # a deployment with two triggers names them
        description=f"Runs deployment {deployment_name} on {', '.join(sorted(spec['expect']))}.",
        enabled=spec.get("enabled", True),
        trigger=EventTrigger(
            match=ResourceSpecification(spec["match"]), expect=set(spec["expect"]),
            posture=Posture(spec.get("posture", "Reactive")), threshold=spec.get("threshold", 1),
            within=timedelta(seconds=spec.get("within", 0)),
        ),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id, parameters=spec.get("parameters"))],
    )
