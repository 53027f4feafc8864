"""Serve Spotline's flows from this process, no work pool needed: the deployments show in the UI
and can be run ad hoc from there (Deployments -> ingest-documents -> Run).

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve_local
"""

from prefect import serve

from flows.ingest import ingest
from flows.prompt_eval import prompt_eval

if __name__ == "__main__":
    serve(
        ingest.to_deployment(name="ingest-nightly", cron="15 2 * * *", parameters={"full_sync": True},
                             concurrency_limit=1),
        ingest.to_deployment(name="ingest-adhoc"),
        prompt_eval.to_deployment(name="prompt-gate"),
    )
