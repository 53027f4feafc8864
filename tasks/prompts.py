"""The prompt gate's unit of work: one prompt's golden set through the gateway, with its table."""

from __future__ import annotations

from prefect import task

from runtime.artifacts import summary_table
from spotline.llm.golden import EvalReport, evaluate
from spotline.resources import get_resources


# No retries: the gateway already retried and fell back across models, and a gate that passes
# on the third try of a flaky model would hide exactly what it exists to catch.
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
