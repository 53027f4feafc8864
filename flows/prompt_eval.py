"""Prompt gate: evaluate prompts against their golden sets before a prompt edit ships.

The story of a run:
1. Put the LLM gateway on the server's shared concurrency/rate limits for its providers.
2. For each prompt (default: every file in prompts/), run its golden set through the gateway on
   the chosen use's models, uncached: the gate measures the model, not yesterday's answers.
3. Compare schema validity and the check pass rate with the recorded baseline
   (prompts/baselines.json); an edited prompt must also carry a new version.
4. Report: one table per prompt (every case, its checks and output), the gate's verdicts, the
   run report (LLM tokens and cost by model, scoped to this run), and a failed run when any
   prompt fell below its baseline.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from spotline.errors import PermanentError
from spotline.llm.golden import gate_rows, load_baselines
from spotline.resources import get_resources
from runtime.artifacts import summary_table
from runtime.limits import use_server_limits
from runtime.recovery import hand_off_if_over_budget
from runtime.report import run_report
from tasks.prompts import evaluate_prompt


class PromptGateFailed(PermanentError):
    """A prompt fell below its recorded baseline: re-running the same prompt gives the same verdict."""


@flow(name="prompt-eval", description="Golden-set gate for prompts/*.yaml: fails below the recorded baseline.")
def prompt_eval(prompts: list[str] | None = None, use: str = "default") -> list[dict]:
    gateway = get_resources().gateway
    if moved := hand_off_if_over_budget(gateway.settings.prefect.interruption_budget):
        return moved  # interrupted too often on Spot: the on-demand pool finishes it
    with run_report("prompt-eval", gateway.settings.prices, ledger=gateway.ledger):
        use_server_limits(gateway)
        names = prompts or gateway.prompts.names()
        baselines = load_baselines(gateway.cfg.prompts_dir)
        reports = [evaluate_prompt(name, use) for name in names]
        rows, problems = gate_rows(reports, baselines)
    summary_table("prompt-gate", rows, f"{len(names)} prompt(s), {len(problems)} problem(s)")
    if problems:
        for p in problems:
            get_run_logger().error(p)
        raise PromptGateFailed("; ".join(problems))
    return rows
