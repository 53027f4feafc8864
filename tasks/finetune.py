"""Fine-tuning's units of work: the training set, training, registration, evaluation, the decision.

Training is not cached by Prefect: its progress lives in the checkpoints (spotline/finetune), which
are keyed by the job (training set + settings + parent), so a retried task, a rescheduled run or a
run on the on-demand pool continues from the last committed step. Registration is idempotent
(versions are named by the job). Models are passed between tasks in memory: one flow run, one
process, and nothing here is worth persisting that the registry does not already keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runtime.retry import retry_policy
from spotline.finetune import evaluate as ev
from spotline.finetune import judge_calibration as jc
from spotline.finetune import pairs as pr
from spotline.finetune import run as fr
from spotline.finetune.intake import load_feedback
from spotline.finetune.registry import ModelVersion, Registry
from spotline.resources import get_resources

RETRY = retry_policy()


def _workdir() -> Path:
    path = get_resources().settings.home / "finetune"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _registry() -> Registry:
    res = get_resources()
    return Registry(res.store, res.settings.layout.models)


@task(name="build-training-set", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def build_training_set(producer: str) -> fr.TrainingSet:
    """Every stored correction as pairs (holdout by keyed hash); published when there is enough to train."""
    res = get_resources()
    cfg = res.settings.finetune
    feedback = load_feedback(res.datasets, res.settings.feedback.dataset)
    pairs = pr.build(feedback, cfg.holdout_share, cfg.holdout_salt)
    if len(pairs.train) < cfg.min_train:
        return fr.TrainingSet(pairs, None, pairs.content_hash, len(feedback))
    manifest = fr.publish_training_set(res.datasets, cfg.dataset, feedback, pairs, producer)
    return fr.TrainingSet(pairs, manifest.version, manifest.content_hash, len(feedback))


@task(name="prepare-base-model", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def prepare_base() -> tuple[Path, Path, str]:
    """(GGUF, converted transformers folder, base label): converted once, cached in the object store."""
    from spotline.finetune.base_model import convert_once

    res = get_resources()
    gguf = fr.base_gguf(res.settings)
    folder = res.settings.finetune.base_folder or convert_once(res.store, f"{res.settings.layout.models}base/", gguf,
                                                               _workdir() / "base")
    return gguf, folder, fr.base_label(res.settings, gguf)


@task(name="current-champion", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def current_champion(base_label: str, producer: str) -> ModelVersion:
    reg = _registry()
    reg.ensure_base(base_label, producer)
    return reg.resolve("champion")


@task(name="train-candidate", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def train_candidate(folder: Path, training: fr.TrainingSet, champion: ModelVersion) -> fr.Trained:
    from spotline.finetune.base_model import load_converted

    res = get_resources()
    cfg = fr.train_config(res.settings.finetune)
    job = fr.job_key(training.pairs, cfg, champion.version)
    model, tokenizer = load_converted(folder)
    init = fr.champion_adapter(_registry(), champion, _workdir()) if fr.continues_from(champion, cfg) else None
    if init is None and champion.has("adapter.safetensors"):
        get_run_logger().warning("the LoRA shape changed since champion %s (rank, alpha or target modules): "
                                 "training starts fresh on the base", champion.version)
    return fr.train(lambda: model, tokenizer, training.pairs.pairs("train"), cfg, res.store,
                    res.settings.layout.checkpoints(job), job, _workdir(), init)


@task(name="register-candidate", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def register_candidate(trained: fr.Trained, gguf: Path, base_label: str, training: fr.TrainingSet,
                       champion: ModelVersion, producer: str) -> ModelVersion:
    """The adapter as a GGUF LoRA for llama.cpp, then an immutable registry version; `candidate` moves to it."""
    from spotline.finetune.gguf_lora import export_gguf_lora

    reg = _registry()
    out = trained.adapter_dir.parent / "adapter.gguf"
    export_gguf_lora(trained.adapter_dir.parent / "peft", out, gguf)
    version = fr.register_candidate(  # a resumed run finds its version registered and reuses it
        reg, trained.job, base_label, trained, out,
        {"name": get_resources().settings.finetune.dataset, "version": training.version,
         "content_hash": training.pairs.content_hash, **training.pairs.summary()},
        champion.version, producer)
    if reg.aliases().aliases.get("candidate") != version.version:
        reg.move("candidate", version.version, f"trained on {training.version} ({trained.result.steps} steps)",
                 action="set", actor=producer)
    return version


@task(name="evaluate-candidate", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def evaluate(folder: Path, trained: fr.Trained, champion: ModelVersion, training: fr.TrainingSet
             ) -> tuple[ev.Scores, ev.Scores, ev.HeadToHead | None, ev.Decision]:
    """Champion and candidate on the holdout and the golden set; the judge head-to-head; the decision."""
    from spotline.finetune.base_model import load_converted
    from spotline.finetune.trainer import encode_pairs, lora_model
    from spotline.swarm import judge as jd

    res = get_resources()
    cfg = res.settings.finetune
    model, tokenizer = load_converted(folder)
    init = fr.champion_adapter(_registry(), champion, _workdir())
    champion_model = lora_model(model, fr.champion_config(champion, trained.config), init) if init else model
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    holdout_pairs = training.pairs.pairs("holdout")
    holdout = encode_pairs(tokenizer, holdout_pairs, trained.config.max_tokens)
    golden = fr.golden_pairs(cfg.golden_set)
    args = (tokenizer, res.embedder, holdout, holdout_pairs, golden, pad, cfg.eval_max_new_tokens)
    champ = ev.score(f"champion ({champion.version})", champion_model, *args)
    cand = ev.score(f"candidate ({trained.job})", trained.extra["model"], *args)
    judge = None
    if cfg.judge_use != "none":
        models = ",".join(m.model_id for _, m in res.gateway.chain(cfg.judge_use))
        # The win rate gates only for a route whose pairwise calibration (`spotline finetune
        # calibrate-judge`) is recorded at or above the floor, for the models it runs now.
        gating, why = jd.gating(res.store, res.settings.layout.judge_calibrations, cfg.judge_use + jc.SUFFIX,
                                models, cfg.judge_floor_kappa, command="spotline finetune calibrate-judge")
        items = [(p, ref, a, b) for (p, ref), a, b in zip(holdout_pairs + golden, champ.answers + champ.golden_answers,
                                                          cand.answers + cand.golden_answers)]
        judge = ev.head_to_head(res.gateway, cfg.judge_use, items, gating, why)
    decision = ev.decide(champ, cand, judge, fr.gate_config(cfg), len(holdout_pairs))
    return champ, cand, judge, decision


@task(name="promote-or-keep", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def promote_or_keep(candidate: ModelVersion, champion: ModelVersion, scores: tuple[ev.Scores, ev.Scores],
                    decision: ev.Decision, producer: str) -> dict[str, Any]:
    """Record the evaluation beside the candidate; move `champion` to it when the gate says so and say
    so with an event; otherwise keep the champion (the evaluation says why)."""
    from prefect.events import emit_event

    reg = _registry()
    reg.record_evaluation(candidate.version, {
        "against": champion.version, "champion": scores[0].metrics(), "candidate": scores[1].metrics(),
        "promote": decision.promote, "reason": decision.reason, "checks": decision.checks, "by": producer})
    current = reg.aliases().aliases.get("champion")
    if not decision.promote:
        return {"promoted": False, "champion": current, "reason": decision.reason}
    if current == candidate.version:  # a resumed run that had already promoted
        return {"promoted": True, "champion": current, "reason": decision.reason, "already": True}
    move = reg.move("champion", candidate.version, decision.reason[:500], action="promote", actor=producer)
    emit_event("spotline.model.promoted", resource={"prefect.resource.id": f"spotline.model.{candidate.version}"},
               payload={"version": candidate.version, "previous": move.from_version, "reason": decision.reason[:500]})
    return {"promoted": True, "champion": candidate.version, "previous": move.from_version, "reason": decision.reason}
