"""Spotline's ECS job template, rendered by prefect-aws's own ECS worker code.

Each test builds the job configuration the way the worker does (template + job variables ->
`ECSJobConfiguration.from_template_and_values` -> `prepare_for_flow_run`), then asks the worker's
own `_prepare_task_definition` and `_prepare_task_run_request` for the RegisterTaskDefinition and
RunTask payloads. Nothing reaches AWS or a Prefect API: the Prefect client handed to the template
resolver fails on any use, and so does every boto client the AWS credentials block could make.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from prefect.cli.flow_run import _termination_intent
from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.schema_tools import ValidationError, is_valid_schema, validate
from prefect.utilities.templating import find_placeholders
from prefect_aws.credentials import AwsCredentials
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from deployments.ecs import POOLS, TEMPLATE_FILE, job_template

ACCOUNT = "123456789012"
REGION = "ap-southeast-2"  # not a default anywhere, so the log region can only come from the worker's client
WORKER_API_URL = "https://prefect.spotline.example/api"
TASK_DEFINITION_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/spotline:7"

# What a Spotline deployment (or the pool, once created in an account) supplies: the required variables.
ACCOUNT_VARIABLES: dict[str, Any] = {
    "task_role_arn": f"arn:aws:iam::{ACCOUNT}:role/spotline-flow",
    "execution_role_arn": f"arn:aws:iam::{ACCOUNT}:role/spotline-ecs-execution",
    "subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"],
    "security_groups": ["sg-0123abcd"],
}
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/spotline:3f2a9c1"


class _NoPrefectAPI:
    """Stands in for the PrefectClient: rendering this template must never need one."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering the job template called the Prefect API ({name})")


@pytest.fixture(autouse=True)
def no_aws_clients(monkeypatch):
    """Any boto client the worker asks for (EC2 network lookup, ECS) fails the test instead of calling AWS."""

    def refuse(self, client_type, *args, **kwargs):
        raise AssertionError(f"the ECS worker asked for a {client_type!r} client: that would call AWS")

    monkeypatch.setattr(AwsCredentials, "get_client", refuse)


@dataclass
class Rendered:
    configuration: ECSJobConfiguration
    task_definition: dict[str, Any]
    run_request: dict[str, Any]
    flow_run: FlowRun
    deployment: DeploymentResponse

    @property
    def container(self) -> dict[str, Any]:
        """The container definition the flow run executes in (the one the overrides target)."""
        name = self.override["name"]
        (container,) = [c for c in self.task_definition["containerDefinitions"] if c["name"] == name]
        return container

    @property
    def override(self) -> dict[str, Any]:
        (override,) = self.run_request["overrides"]["containerOverrides"]
        return override

    @property
    def environment(self) -> dict[str, str]:
        """What the container sees: the task definition's environment, then the RunTask override on top."""
        env = {item["name"]: item["value"] for item in self.container.get("environment", [])}
        env.update({item["name"]: item["value"] for item in self.override.get("environment", [])})
        return env


def render(
    pool: str,
    deployment_variables: dict[str, Any] | None = None,
    flow_run_variables: dict[str, Any] | None = None,
) -> Rendered:
    """Render the pool's template for one flow run, the way an ECS worker polling `pool` would."""
    template = job_template(POOLS[pool])
    work_pool = WorkPool(id=uuid.uuid4(), name=pool, type="ecs", base_job_template=template)
    flow = Flow(id=uuid.uuid4(), name="ingest")
    deployment_variables = {**ACCOUNT_VARIABLES, "image": IMAGE, **(deployment_variables or {})}
    deployment = DeploymentResponse(
        id=uuid.uuid4(), name="ingest-nightly", flow_id=flow.id, job_variables=deployment_variables
    )
    flow_run = FlowRun(
        id=uuid.uuid4(),
        name="patient-heron",
        flow_id=flow.id,
        deployment_id=deployment.id,
        job_variables=flow_run_variables or {},
    )

    # BaseJobConfiguration.resolve_for_flow_run without the API reads: deployment variables, flow-run
    # variables over them, with `env` merged key by key rather than replaced.
    values = json.loads(json.dumps(deployment.job_variables))
    run_values = dict(flow_run.job_variables or {})
    if isinstance(values.get("env"), dict):
        values["env"].update(run_values.pop("env", {}))
    values.update(run_values)

    configuration = asyncio.run(
        ECSJobConfiguration.from_template_and_values(
            base_job_template=work_pool.base_job_template, values=values, client=_NoPrefectAPI()
        )
    )
    # The worker forwards its own Prefect settings (PREFECT_API_URL, ...) to the flow run.
    with temporary_settings(updates={PREFECT_API_URL: WORKER_API_URL}):
        configuration.prepare_for_flow_run(
            flow_run=flow_run,
            deployment=deployment,
            flow=flow,
            work_pool=work_pool,
            worker_name="spotline-ecs-worker-1",
        )

    worker = ECSWorker(work_pool_name=pool)  # never started: no API, no observer
    # `_prepare_and_create_task` passes `ecs_client.meta.region_name` as the region.
    task_definition = worker._prepare_task_definition(configuration, region=REGION, flow_run=flow_run)
    worker._validate_task_definition(task_definition, configuration)
    run_request = worker._prepare_task_run_request(
        configuration, task_definition, TASK_DEFINITION_ARN, new_task_definition_registered=True
    )
    return Rendered(configuration, task_definition, run_request, flow_run, deployment)


def ecs_api_errors(operation: str, params: dict[str, Any]) -> str:
    """Check a payload against botocore's ECS model (offline), as the boto client would before sending it."""
    model = botocore.session.get_session().get_service_model("ecs")
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    return report.generate_report() if report.has_errors() else ""


def variable_defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {
        name: schema["default"]
        for name, schema in template["variables"]["properties"].items()
        if "default" in schema
    }


# --- capacity -----------------------------------------------------------------------------------


def test_spot_pool_runs_on_fargate_spot_capacity_with_no_launch_type():
    request = render("spotline-spot").run_request

    assert request["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert "launchType" not in request


def test_ondemand_pool_runs_on_the_fargate_launch_type_with_no_capacity_provider_strategy():
    request = render("spotline-ondemand").run_request

    assert request["launchType"] == "FARGATE"
    assert "capacityProviderStrategy" not in request


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_both_pools_register_a_fargate_task_definition_in_awsvpc_mode(pool):
    task_definition = render(pool).task_definition

    assert task_definition["requiresCompatibilities"] == ["FARGATE"]
    assert task_definition["networkMode"] == "awsvpc"


def test_a_deployment_on_the_spot_pool_can_opt_out_of_spot_with_its_launch_type():
    request = render("spotline-spot", {"launch_type": "FARGATE"}).run_request

    assert request["launchType"] == "FARGATE"
    assert "capacityProviderStrategy" not in request


# --- Spot interruption: two minutes, then the run goes back to Scheduled --------------------------


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_flow_run_container_gets_fargates_full_two_minutes_between_sigterm_and_sigkill(pool):
    rendered = render(pool)

    # stopTimeout only exists on the container definition (RunTask overrides cannot set it).
    assert rendered.container["stopTimeout"] == 120
    assert "stopTimeout" not in rendered.override


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_flow_run_execute_reschedules_the_run_on_sigterm(pool, monkeypatch):
    rendered = render(pool)

    # The behaviour only exists in `prefect flow-run execute`, so that must be the container's command.
    assert rendered.override["command"] == ["prefect", "flow-run", "execute"]
    assert rendered.environment["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    # ... and Prefect's supervisor reads that variable and turns it into the reschedule intent.
    monkeypatch.setenv(
        "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR",
        rendered.environment["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"],
    )
    assert _termination_intent() == "reschedule"


# --- environment --------------------------------------------------------------------------------


def test_environment_has_spotline_settings_the_deployment_env_and_the_workers_prefect_variables():
    rendered = render(
        "spotline-spot",
        {"env": {"SPOTLINE_PROFILE": "aws", "SPOTLINE_INDEX__KIND": "opensearch"}},
        {"env": {"SPOTLINE_LOG_LEVEL": "DEBUG"}},
    )
    env = rendered.environment

    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"
    assert env["SPOTLINE_EMBEDDING__WORKERS"] == "1"
    assert env["SPOTLINE_PROFILE"] == "aws"
    assert env["SPOTLINE_INDEX__KIND"] == "opensearch"
    assert env["SPOTLINE_LOG_LEVEL"] == "DEBUG"  # a flow run's own env is merged too, not swapped in
    assert env["PREFECT_API_URL"] == WORKER_API_URL
    assert env["PREFECT__FLOW_RUN_ID"] == str(rendered.flow_run.id)
    assert env["PREFECT__DEPLOYMENT_ID"] == str(rendered.deployment.id)


def test_a_deployment_env_entry_overrides_or_unsets_a_template_default():
    env = render(
        "spotline-spot",
        {"env": {"SPOTLINE_EMBEDDING__WORKERS": "3", "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": None}},
    ).environment

    assert env["SPOTLINE_EMBEDDING__WORKERS"] == "3"
    assert "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR" not in env


def test_embedding_workers_default_to_the_default_tasks_vcpus():
    rendered = render("spotline-spot")

    vcpus = int(rendered.task_definition["cpu"]) // 1024
    assert vcpus >= 1
    assert rendered.environment["SPOTLINE_EMBEDDING__WORKERS"] == str(vcpus)


def test_cpu_memory_and_embedding_workers_overrides_flow_into_the_task_and_the_run_request():
    rendered = render("spotline-spot", {"cpu": 2048, "memory": 8192, "embedding_workers": 2})

    assert (rendered.task_definition["cpu"], rendered.task_definition["memory"]) == ("2048", "8192")
    assert (rendered.run_request["overrides"]["cpu"], rendered.run_request["overrides"]["memory"]) == (
        "2048",
        "8192",
    )
    assert (rendered.override["cpu"], rendered.override["memory"]) == (2048, 8192)
    assert rendered.environment["SPOTLINE_EMBEDDING__WORKERS"] == "2"


def test_default_task_size_is_one_vcpu_and_two_gib():
    rendered = render("spotline-ondemand")

    assert (rendered.task_definition["cpu"], rendered.task_definition["memory"]) == ("1024", "2048")


# --- roles, logs, network -----------------------------------------------------------------------


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_task_and_execution_roles_come_from_job_variables(pool):
    rendered = render(pool)

    assert rendered.task_definition["executionRoleArn"] == ACCOUNT_VARIABLES["execution_role_arn"]
    assert rendered.task_definition["taskRoleArn"] == ACCOUNT_VARIABLES["task_role_arn"]
    assert rendered.run_request["overrides"]["taskRoleArn"] == ACCOUNT_VARIABLES["task_role_arn"]


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_container_logs_go_to_the_spotline_log_group_in_the_tasks_region(pool):
    log_configuration = render(pool).container["logConfiguration"]

    assert log_configuration["logDriver"] == "awslogs"
    options = log_configuration["options"]
    assert options["awslogs-group"] == "/spotline/flows"
    assert options["awslogs-region"] == REGION
    assert pool in options["awslogs-stream-prefix"]  # the worker's default prefix names the pool


def test_a_deployment_can_send_logs_to_another_group_or_turn_them_off():
    moved = render("spotline-spot", {"cloudwatch_logs_options": {"awslogs-group": "/spotline/llm"}})
    off = render("spotline-spot", {"configure_cloudwatch_logs": False, "cloudwatch_logs_options": {}})

    assert moved.container["logConfiguration"]["options"]["awslogs-group"] == "/spotline/llm"
    assert "logConfiguration" not in off.container


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_network_configuration_comes_from_job_variables_without_an_ec2_lookup(pool):
    # The autouse fixture fails the test if the worker tries to infer subnets from a VPC via EC2.
    network = render(pool, {"assign_public_ip": "ENABLED"}).run_request["networkConfiguration"]

    assert network == {
        "awsvpcConfiguration": {
            "subnets": ACCOUNT_VARIABLES["subnets"],
            "securityGroups": ACCOUNT_VARIABLES["security_groups"],
            "assignPublicIp": "ENABLED",
        }
    }


def test_public_ip_is_off_unless_a_deployment_turns_it_on():
    network = render("spotline-spot").run_request["networkConfiguration"]

    assert network["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_rendered_payloads_are_valid_register_task_definition_and_run_task_requests(pool):
    rendered = render(pool, {"cpu": 2048, "memory": 4096, "embedding_workers": 2})

    assert ecs_api_errors("RegisterTaskDefinition", rendered.task_definition) == ""
    assert ecs_api_errors("RunTask", rendered.run_request) == ""


# --- the template file --------------------------------------------------------------------------


def test_both_pools_templates_differ_only_in_the_capacity_default():
    def leaves(node: Any, path: tuple = ()) -> dict[tuple, Any]:
        if isinstance(node, dict):
            return {k: v for key, child in node.items() for k, v in leaves(child, (*path, key)).items()}
        if isinstance(node, list):
            return {k: v for i, child in enumerate(node) for k, v in leaves(child, (*path, i)).items()}
        return {path: node}

    spot = leaves(job_template(POOLS["spotline-spot"]))
    ondemand = leaves(job_template(POOLS["spotline-ondemand"]))

    assert spot.keys() == ondemand.keys()
    differing = {path: (spot[path], ondemand[path]) for path in spot if spot[path] != ondemand[path]}
    assert differing == {("variables", "properties", "launch_type", "default"): ("FARGATE_SPOT", "FARGATE")}


def test_job_template_returns_a_fresh_copy_and_refuses_other_capacities():
    first = job_template("FARGATE_SPOT")
    first["variables"]["properties"]["cpu"]["default"] = 4096

    assert job_template("FARGATE_SPOT")["variables"]["properties"]["cpu"]["default"] != 4096
    with pytest.raises(ValueError):
        job_template("EC2")  # type: ignore[arg-type]


def test_template_file_is_a_valid_base_job_template_for_the_ecs_worker():
    template = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    job_configuration, variables = template["job_configuration"], template["variables"]

    assert set(template) == {"job_configuration", "variables"}
    assert set(job_configuration) <= set(ECSJobConfiguration.model_fields)
    is_valid_schema(variables, preprocess=False)  # the server's check when the pool is created

    placeholders = {p.name for p in find_placeholders(job_configuration)}
    assert placeholders <= set(variables["properties"]), "placeholders without a variable"
    assert set(variables["properties"]) <= placeholders, "variables no placeholder uses"
    assert set(variables["required"]) <= set(variables["properties"])

    # Pool defaults alone must be valid (the server checks them), required variables aside.
    validate(variable_defaults(template), variables, raise_on_error=True, ignore_required=True)


def test_template_keeps_every_prefect_aws_setting_except_the_ec2_network_lookup():
    ours = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    default = ECSWorker.get_default_base_job_template()

    # vpc_id / network_configuration make the worker call EC2 on every run; subnets, security_groups
    # and assign_public_ip go straight into the RunTask request instead.
    dropped = {"vpc_id", "network_configuration"}
    assert set(default["job_configuration"]) - set(ours["job_configuration"]) == dropped
    assert set(default["variables"]["properties"]) - set(ours["variables"]["properties"]) == dropped


def test_a_flow_run_without_roles_or_network_is_refused_before_it_reaches_ecs():
    template = job_template("FARGATE_SPOT")
    schema = template["variables"]
    complete = {**variable_defaults(template), **ACCOUNT_VARIABLES}

    # What the server checks when a flow run is created: pool defaults + deployment + run variables.
    validate(complete, schema, raise_on_error=True, preprocess=True, allow_none_with_default=True)
    for missing in ACCOUNT_VARIABLES:
        values = {k: v for k, v in complete.items() if k != missing}
        with pytest.raises(ValidationError, match=missing):
            validate(values, schema, raise_on_error=True, preprocess=True, allow_none_with_default=True)
