#!/usr/bin/env bash
# The fine-tuning demo on the demo's local stack (started if it is not running): the shipped sample
# feedback is queued, drained, trained on and promoted; then sabotaged feedback (every correction
# moved to another prompt) is trained on and refused by the gate. Runs and artifacts show in the UI.
# About 15 minutes on 2 cores (Gemma 3 270M on the CPU; the first run also converts the base, ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."
export SPOTLINE_HOME="${SPOTLINE_HOME:-$PWD/.spotline}"
PORT="${PREFECT_PORT:-4200}"
export PREFECT_HOME="$SPOTLINE_HOME/prefect"
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
.venv/bin/python -m deployments.devserver up "$PORT" >/dev/null
S=.venv/bin/spotline

echo "== 1. the product sends feedback: 146 events (corrections, complaints, praise, PII, a duplicate, 2 malformed)"
$S feedback send data/feedback/sample_events.jsonl
$S feedback drain
echo "== 2. fine-tune on the corrections: expected to be promoted"
$S finetune run --reason "demo: sample feedback" || true
echo "== 3. sabotaged feedback: the same prompts, each with another prompt's correction"
$S feedback send data/feedback/sabotaged_events.jsonl
$S feedback drain
echo "== 4. fine-tune again: the gate must keep the champion"
$S finetune run --reason "demo: sabotaged feedback" || true
echo "== the registry"
$S model list
cat <<MSG

Prefect UI: http://127.0.0.1:$PORT -> the 'finetune' runs: artifacts finetune-training-set, finetune-loss-curve,
finetune-metrics (champion vs candidate), finetune-decision (every check, the reason), finetune-run-report.
Roll back by hand:  .venv/bin/spotline model rollback --reason "why"      Stop the stack: make stop
MSG
