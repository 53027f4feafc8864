"""The fine-tuning steps as plain functions the Prefect tasks call: the training set, the base model,
training with checkpoints, registration, evaluation. No Prefect here; resources come in as arguments.

The job key names one training: the training set's content hash and the settings' fingerprint.
Everything a retry needs is keyed by it (checkpoints, the candidate's version name), so a run
rescheduled after a Spot interruption, moved to the on-demand pool, or simply started again on the
same data resumes the same training instead of starting another one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from spotline.finetune import evaluate as ev
from spotline.finetune import pairs as pr
from spotline.finetune.checkpoints import CheckpointStore
from spotline.finetune.registry import ModelVersion, Registry
from spotline.finetune.trainer import TrainConfig, TrainResult, Trainer, encode_pairs, lora_model
from spotline.settings import FinetuneSettings, Settings

log = logging.getLogger(__name__)


def train_config(cfg: FinetuneSettings) -> TrainConfig:
    return TrainConfig(seed=cfg.seed, epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       warmup_steps=cfg.warmup_steps, max_tokens=cfg.max_tokens, lora_r=cfg.lora_r,
                       lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                       target_modules=tuple(cfg.target_modules), checkpoint_every=cfg.checkpoint_every,
                       keep_checkpoints=cfg.keep_checkpoints, threads=cfg.threads or _cpus(),
                       max_steps=cfg.max_steps)


def gate_config(cfg: FinetuneSettings) -> ev.GateConfig:
    return ev.GateConfig(min_loss_gain_abs=cfg.min_loss_gain_abs, min_loss_gain_rel=cfg.min_loss_gain_rel,
                         format_floor=cfg.format_floor, max_format_drop=cfg.max_format_drop,
                         max_similarity_drop=cfg.max_similarity_drop,
                         max_golden_loss_rise=cfg.max_golden_loss_rise, min_win_rate=cfg.min_win_rate,
                         min_holdout=cfg.min_holdout)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def job_key(pairs: pr.PairSet, cfg: TrainConfig, champion: str) -> str:
    import hashlib

    fp = hashlib.sha256(json.dumps({"data": pairs.content_hash, "config": cfg.fingerprint(""), "parent": champion},
                                   sort_keys=True).encode()).hexdigest()
    return f"ft-{fp[:16]}"


# --- the training set ------------------------------------------------------------------------------
@dataclass
class TrainingSet:
    pairs: pr.PairSet
    version: str | None  # the published dataset version (None: too small, not published)
    manifest_hash: str
    feedback_rows: int


def publish_training_set(datasets: Any, name: str, feedback: pd.DataFrame, pairs: pr.PairSet, producer: str,
                         now: datetime | None = None) -> Any:
    """Train, holdout and complaints as one dataset version; ``trained_through`` in the manifest is
    what the intake counts new corrections from."""
    now = now or datetime.now(timezone.utc)
    through = str(feedback["ingested_at"].max()) if not feedback.empty and "ingested_at" in feedback else None
    return datasets.publish(
        name, now.strftime("%Y%m%dT%H%M%SZ"),
        {"train": [pairs.train.astype({"ts": str})], "holdout": [pairs.holdout.astype({"ts": str})],
         "complaints": [pairs.complaints.astype({"ts": str})]},
        producer=producer, extra={**pairs.summary(), "trained_through": through}, fmt="jsonl")


def trained_through(datasets: Any, name: str) -> datetime | None:
    """When the newest feedback row of the last training set was ingested (None: never trained)."""
    pointer = datasets.latest(name)
    if pointer is None:
        return None
    value = datasets.manifest(name).extra.get("trained_through")
    return pd.Timestamp(value).to_pydatetime() if value else None


def golden_pairs(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["prompt"], r["answer"]) for r in rows]


# --- models ----------------------------------------------------------------------------------------
def base_gguf(settings: Settings) -> Path:
    spec = settings.llm.models[settings.finetune.base_model]
    if spec.provider != "local":
        raise ValueError(f"finetune.base_model {settings.finetune.base_model!r} is not a local GGUF model")
    if spec.gguf:
        return Path(spec.gguf)
    from spotline.llm.providers.local import default_gguf

    return default_gguf(settings.home)


def base_label(settings: Settings, gguf: Path) -> str:
    from spotline.finetune.base_model import file_sha256

    return f"{settings.llm.models[settings.finetune.base_model].model_id}@sha256:{file_sha256(gguf)[:16]}"


def champion_adapter(registry: Registry, champion: ModelVersion, workdir: Path) -> Path | None:
    if not champion.has("adapter.safetensors"):
        return None
    return registry.fetch(champion, "adapter.safetensors", workdir / "champion" / champion.version / "adapter.safetensors")


_SHAPE = ("lora_r", "lora_alpha", "target_modules")


def champion_config(champion: ModelVersion, cfg: TrainConfig) -> TrainConfig:
    """The LoRA shape the champion was trained with (what its adapter loads into)."""
    import dataclasses

    saved = (champion.training or {}).get("config") or {}
    shape = {k: (tuple(saved[k]) if k == "target_modules" else saved[k]) for k in _SHAPE if k in saved}
    return dataclasses.replace(cfg, **shape)


def continues_from(champion: ModelVersion, cfg: TrainConfig) -> bool:
    """A candidate starts from the champion's adapter only when the LoRA shape is the same; after
    a change of rank or target modules it starts fresh on the base (and says so)."""
    return champion.has("adapter.safetensors") and champion_config(champion, cfg) == cfg


@dataclass
class Trained:
    job: str
    adapter_dir: Path
    result: TrainResult
    config: TrainConfig
    examples: int
    extra: dict[str, Any] = field(default_factory=dict)


def train(model_factory: Any, tokenizer: Any, train_pairs: list[tuple[str, str]], cfg: TrainConfig, store: Any,
          checkpoints_prefix: str, job: str, workdir: Path, init_adapter: Path | None = None,
          on_step: Any = None) -> Trained:
    """LoRA on a fresh base (initialised from the champion's adapter when it has one), checkpointing
    under ``<checkpoints_prefix>`` and resuming from the last whole checkpoint there."""
    examples = encode_pairs(tokenizer, train_pairs, cfg.max_tokens)
    model = lora_model(model_factory(), cfg, init_adapter)
    ckpts = CheckpointStore(store, checkpoints_prefix, keep=cfg.keep_checkpoints)
    result = Trainer(cfg, model, tokenizer, examples, ckpts, on_step=on_step).run(workdir / job / "adapter")
    model.save_pretrained(str(workdir / job / "peft"))  # adapter_config.json + weights, for the GGUF export
    return Trained(job, result.adapter_dir, result, cfg, len(examples), {"model": model})


def register_candidate(registry: Registry, version: str, base: str, trained: Trained, gguf_lora: Path,
                       dataset: dict[str, Any], parent: str, producer: str) -> ModelVersion:
    """Register the trained adapter (peft safetensors + GGUF LoRA) as an immutable version (once:
    a resumed run finds it registered and reuses it)."""
    from spotline.finetune.registry import RegistryError

    try:
        return registry.get(version)
    except RegistryError:
        pass
    peft_dir = trained.adapter_dir.parent / "peft"
    files = {"adapter.safetensors": trained.adapter_dir / "adapter.safetensors", "adapter.gguf": gguf_lora,
             "adapter_config.json": peft_dir / "adapter_config.json"}
    r = trained.result
    entry = ModelVersion(
        version=version, base=base, dataset=dataset, parent=parent, producer=producer,
        training={"steps": r.steps, "final_loss": r.losses[-1] if r.losses else None, "losses": r.losses,
                  "tokens": r.tokens, "fingerprint": r.fingerprint, "config": json.loads(json.dumps(
                      trained.config.__dict__, default=list))})
    return registry.register(entry, files)


def loss_curve_rows(losses: list[float], every: int = 1) -> list[dict[str, Any]]:
    return [{"step": i + 1, "loss": round(v, 4)} for i, v in enumerate(losses) if (i + 1) % every == 0 or i == 0
            or i + 1 == len(losses)]


def loss_sparkline(losses: list[float], width: int = 60) -> str:
    if not losses:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    step = max(1, len(losses) // width)
    pts = [sum(losses[i: i + step]) / len(losses[i: i + step]) for i in range(0, len(losses), step)]
    lo, hi = min(pts), max(pts)
    return "".join(bars[int((p - lo) / (hi - lo) * (len(bars) - 1)) if hi > lo else 0] for p in pts)

