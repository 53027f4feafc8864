"""The ``prefect:`` secret scheme: a Prefect ``Secret`` block, resolved like any other reference.

spotline.secrets knows env, Secrets Manager and SSM; Prefect blocks belong to this layer, so the
scheme is registered here (runtime/__init__ imports this module, and every flow and the CLI
import runtime). Values still pass through the resolver's TTL cache and redaction.
"""

from __future__ import annotations

import json

from spotline.secrets import register_scheme


def _prefect_block(name: str) -> str:
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    return value if isinstance(value, str) else json.dumps(value)


register_scheme("prefect", _prefect_block)
