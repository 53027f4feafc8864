"""Ingest runs in separate processes that start in about a second.

A fresh Python process spends ~25 s here importing torch and sentence-transformers before it can
embed anything, which would make a 20-trial kill harness or four racing runs take many minutes.
Children are forked instead from a fork server that imported those heavy libraries once and
started no threads (Prefect and Spotline are imported in the child, with the child's own
environment). Each child is a real, separate process with its own Prefect client, embedding model
and index handles: what a second worker on the same machine would be.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

# Heavy, thread-free imports worth doing once. Prefect is left out on purpose: its settings are
# read at import, and each child must see its own PREFECT_API_URL and SPOTLINE_* environment.
PRELOAD = ["torch", "sentence_transformers", "lance", "pyarrow", "pandas", "spotline.embedding.local"]


def context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # process-wide; also what the embedding pool would preload
    return ctx


def _run(env: dict[str, str], params: dict[str, Any], out: str, start: Any) -> None:
    os.environ.update(env)
    from flows.ingest import ingest  # imported after the environment is in place

    if start is not None:
        start.wait(120)  # racing children begin together
    summary = ingest(**params)
    Path(out).write_text(summary.model_dump_json())


def start_ingest(env: dict[str, str], params: dict[str, Any], out: Path, start: Any = None):
    """A child process running ingest(**params); its summary lands in `out` as JSON."""
    ctx = context()
    proc = ctx.Process(target=_run, args=(env, params, str(out), start), daemon=False)
    proc.start()
    return proc


def child_env(store: Path, index: Path, api: str, **extra: str) -> dict[str, str]:
    return {
        "PREFECT_API_URL": api,
        "SPOTLINE_STORE__ROOT": str(store),
        "SPOTLINE_INDEX__PATH": str(index),
        "SPOTLINE_EMBEDDING__WORKERS": "1",  # in-process model: no nested pool of fresh processes
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **extra,
    }
