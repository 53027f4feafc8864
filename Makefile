# The two commands a new user needs:   make demo   and   make test
# Both bootstrap everything from Python 3.11 + pip: uv, the locked environment, the services.

UV_VERSION := 0.13.8
PYTHON ?= python3
UV := $(PYTHON) -m uv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export UV_LINK_MODE := copy
# Compile every installed module to bytecode once, at install. Without it a process whose Python may
# not write .pyc files (PYTHONDONTWRITEBYTECODE=1, a read-only image) compiles ~700 modules from
# source on every start: 1.9 s of a 3.5 s `spotline query` on the machine this was measured on.
export UV_COMPILE_BYTECODE := 1

.PHONY: demo demo-finetune bench-finetune test test-all test-fast bench bench-llm bench-personas bench-swarm bench-huge bench-ops bench-start prompt-gate deploy worker watch env clean stop

env: .venv/.synced-bytecode

.venv/.synced-bytecode: pyproject.toml uv.lock
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-extras
	@touch $@

## Ingest the sample help centre on local defaults, query it, show it in the Prefect UI.
demo: env
	bash scripts/demo.sh

## Feedback -> LoRA fine-tune -> gate -> registry on the sample feedback, then a sabotaged set the gate refuses (~15 min).
demo-finetune: env
	bash scripts/finetune_demo.sh

# Which tests `make test` runs. On a developer machine: everything but the tests marked slow (about
# 7 minutes on 2 cores). CI's .ci/run sets SPOTLINE_TESTS=all, so it runs the slow real-model and
# multi-process proofs too (about an hour); `make test-all` does the same here.
SPOTLINE_TESTS ?= fast
TEST_SELECTION := $(if $(filter all,$(SPOTLINE_TESTS)),,-m "not slow")

## The tests: everything but the slow ones here; every test in CI (.ci/run sets SPOTLINE_TESTS=all).
test: env
	$(UV) run --frozen --no-sync pytest -q --durations=15 $(TEST_SELECTION)

## Every test, the slow real-model and multi-process ones included (what CI runs).
test-all: env
	$(UV) run --frozen --no-sync pytest -q --durations=15

## Same as make test on a developer machine (kept for habit).
test-fast: env
	$(UV) run --frozen --no-sync pytest -q -m "not slow"

## The ingestion benchmark (README "Benchmark"): Spotline vs the bare model vs LlamaIndex, side by side.
bench: env
	$(UV) run --frozen --no-sync python bench/ingest_bench.py

## One huge text document: peak RSS for 40 MB vs 1 MB, good files beside it indexed (a few minutes).
bench-huge: env
	$(UV) run --frozen --no-sync python bench/huge_doc_bench.py

## Operations: upload -> searchable latency (single, burst of 500), SIGTERM -> rescheduled -> running, work lost.
bench-ops: env
	$(UV) run --frozen --no-sync python bench/operations_bench.py

## First contact: `spotline query` process time, single-object ingest latency, bulk throughput, ONNX vs torch.
bench-start: env
	$(UV) run --frozen --no-sync python bench/first_contact_bench.py

## LLM gateway benchmark: local tokens/s, cache-hit latency, gateway overhead at 64 concurrent calls.
bench-llm: env
	$(UV) run --frozen --no-sync python bench/llm_bench.py

## Persona pipeline: sanitizer rows/s and recall vs Presidio's BatchAnalyzerEngine, known values at 1M (~6 min).
bench-personas: env
	$(UV) run --frozen --no-sync python bench/persona_bench.py

## Fine-tuning: tokens/s with vs without checkpoints, SIGTERM -> committed checkpoint, work lost per SIGKILL.
bench-finetune: env
	$(UV) run --frozen --no-sync python bench/finetune_bench.py

## Swarm harness vs a plain asyncio + httpx loop vs locust (10,000 requests), and a 429 storm.
bench-swarm: env
	$(UV) run --frozen --no-sync python bench/swarm_bench.py

## The prompt gate: golden sets vs prompts/baselines.json on the default route (exit 1 on a regression).
prompt-gate: env
	$(UV) run --frozen --no-sync spotline prompts eval

## Work pools, deployments, limits and blocks from deployments/catalog.py onto $PREFECT_API_URL (idempotent).
deploy: env
	$(UV) run --frozen --no-sync python -m deployments apply

## A process worker for the local pool (runs flows the way an ECS task does: `prefect flow-run execute`).
worker: env
	$(UV) run --frozen --no-sync prefect worker start --pool spotline-local

## Announce uploads to the local store as events (the local stand-in for S3 -> SQS -> relay).
watch: env
	$(UV) run --frozen --no-sync python -m runtime.watcher

stop:
	@$(UV) run --frozen --no-sync python -m deployments.devserver stop

clean: stop
	rm -rf .spotline
