"""Feedback-triggered fine-tuning: corrections in, a LoRA trained on Spot, an evaluation gate, a registry.

The story of a run:
1. Past its interruption budget on Spot, the run hands itself to the on-demand pool (same job).
   Another finetune run already training (a trigger and an ad-hoc start at once): step aside.
2. Build the training set from every stored correction: prompt -> correction pairs, a holdout
   chosen by a keyed hash that never trains, complaints kept aside. Too few pairs: stop here.
   Otherwise publish it (train / holdout / complaints, manifest with the content hash).
3. The base model: Gemma 3 270M de-quantized from the GGUF llama.cpp serves, converted once and
   cached in the object store. The champion comes from the registry (the base, the first time).
4. Train a LoRA from the champion's adapter, checkpointing to the object store every N steps and
   on SIGTERM; a rescheduled run resumes from the last committed checkpoint, bit for bit.
5. Export the adapter as a GGUF LoRA (what llama.cpp serves), register an immutable version, and
   point `candidate` at it.
6. Evaluate candidate against champion on the holdout and the golden set (loss, similarity to the
   correction, format validity, the judge's head-to-head), and decide: promote only when the
   candidate beats the champion by both margins and no floor regresses. Promotion moves `champion`
   (atomically, with its history) and emits `spotline.model.promoted`; otherwise the champion
   stays and the run records why.
Artifacts: the training set, the loss curve, metrics side by side, the decision, the run report.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from runtime.artifacts import summary_table
from runtime.interrupt import prompt_exit_on_sigterm
from runtime.recovery import hand_off_if_over_budget
from runtime.report import run_report
from runtime.singleton import earlier_run
from runtime.results import result_storage
from spotline.finetune import run as fr
from spotline.resources import get_resources
from spotline.settings import get_settings
from tasks import finetune as t


@flow(
    name="finetune",
    description="Train a LoRA on the accumulated corrections, evaluate it against the champion, promote only if better.",
    persist_result=True,
    result_storage=result_storage(get_settings()),
)
def finetune(reason: str = "ad hoc") -> dict[str, Any]:
    """`reason`: why the run started (the threshold event fills it in)."""
    res = get_resources()
    settings, cfg = res.settings, res.settings.finetune
    producer = f"flow finetune, run {flow_run.id}"
    if moved := hand_off_if_over_budget(settings.prefect.interruption_budget):
        return moved  # interrupted too often on Spot: the on-demand pool finishes the same job
    if other := earlier_run("finetune"):  # e.g. the trigger's run and an ad-hoc one: one trainer per job
        get_run_logger().info("finetune run %s (%s) is already running: this run steps aside", other.name, other.id)
        return {"status": "skipped", "reason": f"finetune run {other.name} is already running", "running": str(other.id)}

    with prompt_exit_on_sigterm(res.release, grace_s=cfg.sigterm_grace_s, cooperative_s=cfg.sigterm_cooperative_s), \
            run_report("finetune", settings.prices, ledger=res.gateway.ledger, vcpus=fr.train_config(cfg).threads) as _:
        training = t.build_training_set(producer)
        _report_training_set(training, reason)
        if training.version is None:
            why = f"{len(training.pairs.train)} training pairs, fewer than finetune.min_train={cfg.min_train}"
            get_run_logger().info("not training: %s", why)
            return {"status": "skipped", "reason": why}
        gguf, folder, base = t.prepare_base()
        champion = t.current_champion(base, producer)
        trained = t.train_candidate(folder, training, champion)
        candidate = t.register_candidate(trained, gguf, base, training, champion, producer)
        champ_scores, cand_scores, judge, decision = t.evaluate(folder, trained, champion, training)
        outcome = t.promote_or_keep(candidate, champion, (champ_scores, cand_scores), decision, producer)
        _report_outcome(trained, champ_scores, cand_scores, judge, decision, outcome)
    return {"status": "promoted" if outcome["promoted"] else "kept", "candidate": candidate.version,
            "champion": outcome["champion"], "reason": decision.reason, "steps": trained.result.steps,
            "resumed_from": trained.result.resumed_from, "lost_steps": trained.result.lost_steps,
            "metrics": {"champion": champ_scores.metrics(), "candidate": cand_scores.metrics()}}


def _report_training_set(training: fr.TrainingSet, reason: str) -> None:
    s = training.pairs.summary()
    rows = [{"what": "feedback rows stored", "count": training.feedback_rows},
            {"what": "training pairs (corrections)", "count": s["train"]},
            {"what": "held out (never trained on)", "count": s["holdout"]},
            {"what": "complaints without a correction (kept aside)", "count": s["complaints"]}]
    rows += [{"what": f"dropped: {why}", "count": n} for why, n in sorted(s["dropped"].items())]
    rows.append({"what": "dataset version / content hash",
                 "count": f"{training.version or 'not published'} / {s['content_hash'][:12]}"})
    summary_table("finetune-training-set", rows, f"Training set ({reason})")


def _report_outcome(trained, champ, cand, judge, decision, outcome) -> None:
    r = trained.result
    summary_table("finetune-loss-curve", fr.loss_curve_rows(r.losses, max(1, len(r.losses) // 40)),
                  f"Training loss by step ({r.steps} steps, {r.tokens} tokens): {fr.loss_sparkline(r.losses)}")
    metrics = [{"metric": k, "champion": v, "candidate": cand.metrics()[k]} for k, v in champ.metrics().items()]
    if judge is not None:
        metrics.append({"metric": f"judge win rate ({'gating' if judge.gating else 'advisory'})", "champion": "",
                        "candidate": round(judge.win_rate, 3) if judge.win_rate is not None else "n/a"})
    summary_table("finetune-metrics", metrics, "Champion vs candidate, side by side")
    lines = [f"## {'Promoted' if outcome['promoted'] else 'Champion kept'}", "", decision.reason, "",
             "| check | ok | gating | detail |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['check']} | {'yes' if c['ok'] else 'NO'} | {'yes' if c['gating'] else 'advisory'} | "
              f"{c['detail'].replace('|', '/')} |" for c in decision.checks]
    lines += ["", f"Training: {r.steps} steps; this attempt {r.seconds:.0f} s ({r.tokens_per_s():.0f} tokens/s), "
                  f"{r.checkpoints} checkpoints in {r.checkpoint_seconds:.1f} s; resumed from step "
                  f"{r.resumed_from if r.resumed_from is not None else '- (fresh)'}, steps redone "
                  f"{r.lost_steps if r.lost_steps is not None else 0}."]
    create_markdown_artifact(key="finetune-decision", markdown="\n".join(lines), description="The promotion decision")
    get_run_logger().info("%s", decision.reason)


if __name__ == "__main__":
    print(finetune())
