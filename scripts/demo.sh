#!/usr/bin/env bash
# Start a local Prefect server (SQLite), ingest the sample help centre, answer three questions.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPOTLINE_HOME="${SPOTLINE_HOME:-$PWD/.spotline}"
PORT="${PREFECT_PORT:-4200}"
export PREFECT_HOME="$SPOTLINE_HOME/prefect"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-INFO}"
PY=.venv/bin/python

started=""
if $PY -c "import sys; from deployments.devserver import healthy; sys.exit(0 if healthy(sys.argv[1]) else 1)" "$PREFECT_API_URL"; then
  echo "Using the Prefect server already running at http://127.0.0.1:$PORT"
else
  echo "Starting a local Prefect server on http://127.0.0.1:$PORT (first start migrates its SQLite database, ~30 s)..."
  $PY -m deployments.devserver start "$PORT" >/dev/null
  started=yes
fi
cleanup() { if [ -n "$started" ]; then $PY -m deployments.devserver stop; echo "Prefect server stopped."; fi; }
trap cleanup EXIT

.venv/bin/spotline demo

cat <<MSG

Prefect UI: http://127.0.0.1:$PORT
  Runs      -> the 'ingest-documents' flow run, its task runs (list-sources, plan-sync, ingest-batch-N...) and logs
  Artifacts -> 'ingest-summary' (documents, chunks, tokens, time, cost) and 'ingest-set-aside' (bad files + reasons)
Query it yourself:  .venv/bin/spotline query "how do I export invoices to QuickBooks?"
MSG
if [ -t 0 ] && [ -z "${CI:-}" ] && [ -n "$started" ]; then
  read -r -p "Press Enter to stop the Prefect server (or Ctrl-C)... " _ || true
fi
