"""Base job templates for Spotline's two ECS work pools, from the one file next to this module.

Flows run on Fargate Spot (`spotline-spot`); a run interrupted too often moves to plain Fargate
(`spotline-ondemand`). Both pools must start tasks the same way (same image, roles, network, logs,
120 s stopTimeout, SIGTERM -> reschedule) or a run would behave differently after the move, so they
share `ecs-job-template.json` and differ only in the default of `launch_type`.

Create a pool with: `prefect work-pool create spotline-spot --type ecs
--base-job-template <(python -m deployments.ecs spotline-spot)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

Capacity = Literal["FARGATE_SPOT", "FARGATE"]

TEMPLATE_FILE = Path(__file__).with_name("ecs-job-template.json")

# Pool name -> capacity the pool's runs get unless a deployment sets `launch_type` itself.
POOLS: dict[str, Capacity] = {"spotline-spot": "FARGATE_SPOT", "spotline-ondemand": "FARGATE"}


def job_template(capacity: Capacity) -> dict[str, Any]:
    """The ECS base job template with `launch_type` defaulting to `capacity`."""
    if capacity not in ("FARGATE_SPOT", "FARGATE"):
        raise ValueError(f"capacity must be FARGATE_SPOT or FARGATE, not {capacity!r}")
    # Read on each call: callers get a fresh dict they may change without touching the other pool's.
    template = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    # `launch_type` rather than `capacity_provider_strategy`: prefect-aws's worker turns
    # FARGATE_SPOT into capacityProviderStrategy [{FARGATE_SPOT, weight 1}] with no launchType,
    # and FARGATE stays a plain launchType, so neither pool sends both (RunTask refuses that).
    template["variables"]["properties"]["launch_type"]["default"] = capacity
    return template


if __name__ == "__main__":
    # `python -m deployments.ecs <pool>` prints the pool's template for `prefect work-pool create`.
    if len(sys.argv) != 2 or sys.argv[1] not in POOLS:
        sys.exit(f"usage: python -m deployments.ecs {{{'|'.join(POOLS)}}}")
    json.dump(job_template(POOLS[sys.argv[1]]), sys.stdout, indent=2)
    sys.stdout.write("\n")
