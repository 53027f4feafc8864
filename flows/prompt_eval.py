"""Prompt gate: evaluate prompts against their golden sets before a prompt edit ships.

The story of a run:
1. Put the LLM gateway on the server's shared concurrency/rate limits for its providers.
2. For each prompt (default: every file in prompts/), run its golden set through the gateway on
   the chosen use's models, uncached: the gate measures the model, not yesterday's answers.
3. Compare schema validity and the check pass rate with the recorded baseline
   (prompts/baselines.json); an edited prompt must also carry a new version.
4. Report: one table per prompt (every case, its checks and output), the run's LLM cost/usage
   table, and a failed run when any prompt fell below its baseline.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from spotline.llm.golden import EvalReport, evaluate, gate, load_baselines
from spotline.resources import get_resources
from tasks.llm import publish_llm_usage, use_server_limits
from tasks.reporting import summary_table


class PromptGateFailed(RuntimeError):
    pass


@task(name="evaluate-prompt", task_run_name="evaluate-{name}")
def evaluate_prompt(name: str, use: str) -> EvalReport:
    report = evaluate(get_resources().gateway, name, use)
    summary_table(
        f"prompt-eval-{name.replace('_', '-')}",
        report.rows,
        f"{name} v{report.version} on {report.models}: schema validity {report.schema_validity:.0%}, "
        f"checks {report.checks_passed}/{report.checks}",
    )
    return report


@flow(name="prompt-eval", description="Golden-set gate for prompts/*.yaml: fails below the recorded baseline.")
def prompt_eval(prompts: list[str] | None = None, use: str = "default") -> list[dict]:
    log = get_run_logger()
    gateway = get_resources().gateway
    since = gateway.ledger.mark()
    use_server_limits(gateway)
    names = prompts or gateway.prompts.names()
    baselines = load_baselines(gateway.cfg.prompts_dir)
    rows, problems = [], []
    try:
        for name in names:
            report = evaluate_prompt(name, use)
            found = gate(report, baselines.get(name))
            problems += found
            base = baselines.get(name, {})
            rows.append({"prompt": name, "version": report.version, "models": report.models,
                         "schema_validity": f"{report.schema_validity:.0%}",
                         "baseline_validity": f"{base['schema_validity']:.0%}" if base else "none",
                         "check_pass_rate": f"{report.check_pass_rate:.0%}",
                         "baseline_checks": f"{base['check_pass_rate']:.0%}" if base else "none",
                         "gate": "FAIL: " + "; ".join(found) if found else "pass"})
    finally:
        publish_llm_usage(gateway, since)
    summary_table("prompt-gate", rows, f"{len(names)} prompt(s), {len(problems)} problem(s)")
    if problems:
        for p in problems:
            log.error(p)
        raise PromptGateFailed("; ".join(problems))
    return rows
