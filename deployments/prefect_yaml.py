"""prefect.yaml, rendered from the catalog: for `prefect deploy --all` from a CI job that builds the image.

The committed file is generated (`python -m deployments prefect-yaml`); tests/deployments fail
when it drifts from deployments/catalog.py, so the two can never disagree again.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deployments.catalog import prefect_yaml
from spotline.settings import PROJECT_ROOT

PATH = PROJECT_ROOT / "prefect.yaml"
HEADER = """\
# GENERATED from deployments/catalog.py by `python -m deployments prefect-yaml`: edit the catalog, not this file.
# For `prefect deploy --all` against an AWS Prefect server, from an image that holds this repository at
# /opt/spotline (runs go to the ECS pools spotline-spot / spotline-ondemand). On a laptop use
# `python -m deployments apply`, which puts the same list on the local server with the spotline-local pools.
"""


def render() -> str:
    return HEADER + yaml.safe_dump(prefect_yaml("aws"), sort_keys=False, width=110)


def write(path: Path = PATH) -> Path:
    path.write_text(render())
    return path


def check(path: Path = PATH) -> str | None:
    """None when the committed file is what the catalog renders; else what to do."""
    if not path.exists():
        return f"{path} is missing: run `python -m deployments prefect-yaml`"
    if path.read_text() != render():
        return f"{path} drifted from deployments/catalog.py: run `python -m deployments prefect-yaml` and commit it"
    return None
