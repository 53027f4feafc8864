"""Prefect helpers every flow shares: one home for run-level behaviour that is not a task.

`spotline/` stays plain Python; `tasks/` holds `@task` units; `flows/` tell the story of a run.
What sits between (how a run stops when the host reclaims it, how writers to one index take
turns, how a refused request ends a run) lives here.
"""

from runtime import secrets as _secrets  # noqa: F401  registers the prefect: secret scheme
