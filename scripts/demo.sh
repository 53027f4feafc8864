#!/usr/bin/env bash
# The demo: a local Prefect stack that stays up (server, deployments, a worker), then the sample
# help centre uploaded, ingested and asked three questions. `make stop` stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPOTLINE_HOME="${SPOTLINE_HOME:-$PWD/.spotline}"
PORT="${PREFECT_PORT:-4200}"
export PREFECT_HOME="$SPOTLINE_HOME/prefect"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-INFO}"
PY=.venv/bin/python

echo "Local Prefect stack on http://127.0.0.1:$PORT (the first start migrates its SQLite database, ~30 s)..."
$PY -m deployments.devserver up "$PORT" >/dev/null

.venv/bin/spotline demo

cat <<MSG

The stack keeps running. Prefect UI: http://127.0.0.1:$PORT
  Runs        -> the 'ingest-documents' run: its task runs (list-sources, plan-sync, ingest-batch-N...) and logs
  Artifacts   -> 'ingest-run-report' and 'ingest-summary' (documents, chunks, tokens, time, cost),
                 'ingest-set-aside' (the sample's deliberately broken files and why)
  Deployments -> ingest-nightly, ingest-adhoc, ingest-on-upload, prompt-gate (and their fallback twins):
                 "Run" on ingest-adhoc is picked up by the worker on the spotline-local pool
Query it yourself:  .venv/bin/spotline query "How do I export invoices to QuickBooks?"
Uploads become runs by themselves while the watcher runs:  make watch
Stop everything:    make stop
MSG
