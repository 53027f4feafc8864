"""A LoRA fine-tuning loop that resumes exactly: killed and restarted, it ends bit for bit where an
uninterrupted run with the same seed ends (on CPU, same thread count).

Why not HF Trainer / accelerate: none of them promises an exact resume, and their trackers are
full of resumes that silently change the data order or jump the loss (the sampler's RNG is not
part of the checkpoint, a dataloader skips "approximately", the scheduler is stepped one time too
many). Here everything that decides the next step is either derived or saved:

- the data order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e): it
  depends on nothing that happened before, so the data position is just (epoch, offset);
- the adapter, the optimizer, the LR scheduler and every RNG state (Python, NumPy, torch: dropout
  draws from it) are saved in each checkpoint, with the step and the loss curve so far;
- ``torch.use_deterministic_algorithms(True)`` and a fixed thread count: on CPU the same inputs
  then give the same bits in any process.

Checkpoints go to a :class:`~spotline.finetune.checkpoints.CheckpointStore` every
``checkpoint_every`` steps, at the end, and when a stop is requested (spotline.interrupts: the
Prefect layer turns Spot's SIGTERM into that request). A stop commits a checkpoint after the
current step and raises :class:`~spotline.interrupts.Interrupted`; the next attempt resumes from
it. Work lost to a SIGKILL is at most one checkpoint interval; the trainer measures it from a
small progress marker it writes as it goes.

Nothing here knows about Prefect or where the base model came from: the caller passes a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from spotline import interrupts
from spotline.finetune.checkpoints import CheckpointMismatch, CheckpointStore, Committed, scratch_dir

log = logging.getLogger(__name__)

# The rendering every fine-tuned pair uses, in training, evaluation and serving: the local model is
# a base model, so a pair is a completion-style prompt and its continuation.
PROMPT_TEMPLATE = "Question: {prompt}\nAnswer:"
COMPLETION_TEMPLATE = " {completion}"


def render_prompt(prompt: str) -> str:
    return PROMPT_TEMPLATE.format(prompt=prompt.strip())


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 4
    max_grad_norm: float = 1.0
    max_tokens: int = 192  # per example: the prompt is cut from the left, the completion kept
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05  # draws from torch's RNG: part of why every RNG state is saved
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    checkpoint_every: int = 10  # steps
    keep_checkpoints: int = 3
    threads: int = 2  # bitwise equality holds for one thread count; it is part of the fingerprint
    max_steps: int | None = None  # stop early (tests, smoke runs)

    def fingerprint(self, data_hash: str) -> str:
        """What a checkpoint must match to be resumed: every setting that changes the result, and the data."""
        doc = {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "keep_checkpoints")}
        return hashlib.sha256(json.dumps({"config": doc, "data": data_hash}, sort_keys=True, default=list).encode()).hexdigest()


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 on the prompt: the loss is taken on the completion only


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    losses: list[float]
    tokens: int
    seconds: float  # this attempt's wall time
    train_seconds: float  # of which forward/backward/optimizer
    checkpoint_seconds: float  # of which writing checkpoints
    checkpoints: int
    resumed_from: int | None  # the step this attempt started from (None: from scratch)
    lost_steps: int | None  # steps the previous attempt did past its last checkpoint (redone now)
    fingerprint: str = ""

    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_tokens: int) -> list[Example]:
    """Tokenize prompt -> completion pairs; the loss covers the completion and the end-of-sequence token."""
    eos = tokenizer.eos_token_id
    out = []
    for prompt, completion in pairs:
        p = tokenizer(render_prompt(prompt), add_special_tokens=True)["input_ids"]
        c = tokenizer(COMPLETION_TEMPLATE.format(completion=completion.strip()), add_special_tokens=False)["input_ids"]
        c = c[: max_tokens // 2] + ([eos] if eos is not None else [])
        keep = max(1, max_tokens - len(c))
        if len(p) > keep:  # keep the beginning-of-sequence token and the end of the prompt
            p = p[:1] + p[len(p) - keep + 1:]
        out.append(Example(p + c, [-100] * len(p) + c))
    return out


def data_hash(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.input_ids, e.labels]).encode())
    return h.hexdigest()


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The order of epoch ``epoch``: a function of (seed, epoch) only, so a resume needs no sampler state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def deterministic(threads: int) -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def lora_model(base: torch.nn.Module, cfg: TrainConfig, init_adapter: Path | None = None) -> torch.nn.Module:
    """Wrap the base in a fresh LoRA (seeded), or continue from an adapter (the champion's)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    torch.manual_seed(cfg.seed)
    model = get_peft_model(base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))
    if init_adapter is not None:
        set_peft_model_state_dict(model, load_file(str(init_adapter)))
    return model


def save_adapter(model: torch.nn.Module, path: Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(path), metadata={"format": "pt"})


class Trainer:
    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example],
                 checkpoints: CheckpointStore | None, on_step: Callable[[int, float], None] | None = None,
                 progress_every_s: float = 2.0):
        if not examples:
            raise ValueError("nothing to train on: no examples")
        self.cfg, self.model, self.tokenizer, self.examples = cfg, model, tokenizer, list(examples)
        self.ckpts, self.on_step, self.progress_every_s = checkpoints, on_step, progress_every_s
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.steps_per_epoch = math.ceil(len(self.examples) / cfg.batch_size)
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.fingerprint = cfg.fingerprint(data_hash(self.examples))
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        warm, total_steps = cfg.warmup_steps, self.total_steps

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total_steps - step) / max(1, total_steps - warm))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step, self.epoch, self.offset = 0, 0, 0
        self.losses: list[float] = []
        self.tokens = 0
        self._last_progress = 0.0

    # --- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "step": self.step, "epoch": self.epoch, "offset": self.offset, "losses": self.losses,
            "tokens": self.tokens, "fingerprint": self.fingerprint,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]},
        }

    def _restore(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = torch.load(folder / "state.pt", weights_only=True)
        if state["fingerprint"] != self.fingerprint:
            raise CheckpointMismatch("the committed checkpoint was made with other data or settings")
        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter.safetensors")))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.offset = state["step"], state["epoch"], state["offset"]
        self.losses, self.tokens = list(state["losses"]), state["tokens"]
        rng = state["rng"]
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        np_state = rng["numpy"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
        torch.set_rng_state(rng["torch"])

    def _checkpoint(self, reason: str) -> Committed | None:
        if self.ckpts is None:
            return None
        folder = scratch_dir()
        try:
            save_adapter(self.model, folder / "adapter.safetensors")
            torch.save(self._state(), folder / "state.pt")
            return self.ckpts.save(self.step, folder, {"reason": reason, "epoch": self.epoch, "offset": self.offset,
                                                       "fingerprint": self.fingerprint,
                                                       "loss": self.losses[-1] if self.losses else None})
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _progress_key(self) -> str | None:
        return f"{self.ckpts.prefix}progress.json" if self.ckpts else None

    def _mark_progress(self, force: bool = False) -> None:
        key = self._progress_key()
        now = time.monotonic()
        if key is None or (not force and now - self._last_progress < self.progress_every_s):
            return
        self._last_progress = now
        self.ckpts.store.put(key, json.dumps({"step": self.step, "fingerprint": self.fingerprint}).encode(),
                             "application/json")

    def _previous_progress(self) -> int | None:
        key = self._progress_key()
        if key is None or self.ckpts.store.head(key) is None:
            return None
        doc = json.loads(self.ckpts.store.get(key))
        return int(doc["step"]) if doc.get("fingerprint") == self.fingerprint else None

    # --- the loop ----------------------------------------------------------------------------
    def run(self, out_dir: Path) -> TrainResult:
        started = time.perf_counter()
        deterministic(self.cfg.threads)
        resumed_from = lost = None
        reached = self._previous_progress()
        work = scratch_dir("spotline-resume-")
        try:
            commit = self.ckpts.latest(work) if self.ckpts else None
            if commit is not None:
                self._restore(work)
                resumed_from = self.step
                lost = max(0, reached - self.step) if reached is not None else None
                log.info("resuming at step %d (epoch %d, offset %d); %s step(s) redone", self.step, self.epoch,
                         self.offset, lost if lost is not None else "unknown")
            else:
                # No whole checkpoint: everything a previous attempt did (if its marker says it got
                # anywhere) is redone from step 0.
                lost = reached if reached else None
                random.seed(self.cfg.seed)
                np.random.seed(self.cfg.seed)
                torch.manual_seed(self.cfg.seed)
        finally:
            shutil.rmtree(work, ignore_errors=True)

        self.resumed_from, self.lost_steps = resumed_from, lost  # what this attempt started from (callbacks read it)
        train_s = ckpt_s = 0.0
        saved = 0
        self.model.train()
        while self.step < self.total_steps:
            order = epoch_order(self.cfg.seed, self.epoch, len(self.examples))
            if self.offset >= len(order):
                self.epoch, self.offset = self.epoch + 1, 0
                continue
            batch = [self.examples[i] for i in order[self.offset: self.offset + self.cfg.batch_size]]
            t0 = time.perf_counter()
            inputs = collate(batch, self.pad_id)
            loss = self.model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            train_s += time.perf_counter() - t0
            self.step += 1
            self.offset += len(batch)
            self.losses.append(float(loss.detach()))
            self.tokens += int(inputs["attention_mask"].sum())
            self._mark_progress()  # before anything else can stop the process: what lost work is measured by
            if self.on_step is not None:
                self.on_step(self.step, self.losses[-1])
            stopping = interrupts.stop_requested()
            if stopping or self.step % self.cfg.checkpoint_every == 0 or self.step == self.total_steps:
                t1 = time.perf_counter()
                self._checkpoint("stop requested" if stopping else "interval")
                ckpt_s += time.perf_counter() - t1
                saved += 1
                if stopping and self.step < self.total_steps:
                    interrupts.raise_if_stopping(f"training step {self.step + 1} (checkpoint at step {self.step} committed)")
        self._mark_progress(force=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(self.model, out_dir / "adapter.safetensors")
        (out_dir / "training.json").write_text(json.dumps(
            {"config": asdict(self.cfg), "fingerprint": self.fingerprint, "steps": self.step, "losses": self.losses,
             "tokens": self.tokens}, indent=2, default=list))
        return TrainResult(out_dir, self.step, list(self.losses), self.tokens, time.perf_counter() - started, train_s,
                           ckpt_s, saved, resumed_from, lost, self.fingerprint)


@dataclass
class LossReport:
    loss: float
    tokens: int
    per_example: list[float] = field(default_factory=list)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int = 8) -> LossReport:
    """Token-weighted mean loss on the completions (the holdout metric)."""
    model.eval()
    total, count, per = 0.0, 0, []
    for i in range(0, len(examples), batch_size):
        batch = examples[i: i + batch_size]
        inputs = collate(batch, pad_id)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1]
        labels = inputs["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                                   ignore_index=-100, reduction="none").view(labels.shape)
        valid = labels != -100
        for row, ok in zip(losses, valid):
            n = int(ok.sum())
            per.append(float(row[ok].sum() / max(1, n)))
            total += float(row[ok].sum())
            count += n
    return LossReport(total / max(1, count), count, per)
