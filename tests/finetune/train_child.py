"""A training run in its own process, for the kill-and-resume tests and the benchmark.

    python tests/finetune/train_child.py STORE_ROOT OUT.json [--kill-at-step N] [--kill-in-upload STEP]
                                         [--no-checkpoints] [--checkpoint-every K] [--sigterm-handler]

The model is a tiny Gemma 3 (same classes, same LoRA, same loop as the real one) built from a
seed, and the data is a fixed set of synthetic pairs, so every process trains the same thing.
A kill is a real SIGKILL the process sends itself: nothing in it gets to clean up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from spotline.finetune.checkpoints import CheckpointStore  # noqa: E402
from spotline.finetune.trainer import TrainConfig, Trainer, encode_pairs, lora_model  # noqa: E402
from spotline.storage.local import LocalObjectStore  # noqa: E402

PREFIX = "_spotline/checkpoints/test-job/"


class ByteTokenizer:
    """Bytes as tokens: enough for a tiny model, and no files to load."""

    eos_token_id, pad_token_id, bos = 1, 0, 2

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": ([self.bos] if add_special_tokens else []) + [b + 3 for b in text.encode()]}


def tiny_model(seed: int = 0) -> torch.nn.Module:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                           sliding_window=64, layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(cfg)


def pairs(n: int = 40) -> list[tuple[str, str]]:
    return [(f"How do I reset token {i}?", f"Open settings, choose tokens, and reset number {i * 7 % 97}.") for i in range(n)]


def sample_pairs() -> list[tuple[str, str]]:
    """The corrections of the shipped sample feedback (data/feedback/sample_events.jsonl)."""
    root = Path(__file__).resolve().parents[2]
    out = []
    for line in (root / "data" / "feedback" / "sample_events.jsonl").read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("rating") == "down" and e.get("correction"):
            out.append((e["prompt"], e["correction"]))
    return out


def config(checkpoint_every: int = 5, epochs: int = 3) -> TrainConfig:
    return TrainConfig(seed=7, epochs=epochs, batch_size=4, checkpoint_every=checkpoint_every, keep_checkpoints=2,
                       max_tokens=96, warmup_steps=3, threads=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--kill-at-step", type=int)
    ap.add_argument("--kill-in-upload", type=int, help="SIGKILL while uploading this step's checkpoint")
    ap.add_argument("--no-checkpoints", action="store_true")
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--examples", type=int, default=40)
    ap.add_argument("--sigterm-handler", action="store_true", help="SIGTERM asks the trainer to stop (as a flow does)")
    ap.add_argument("--base-folder", help="train the real base (a convert_once folder) on the shipped sample feedback")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--exit-at-step", type=int, help="write what the attempt resumed from and exit after this step")
    args = ap.parse_args()

    store = LocalObjectStore(args.store)
    ckpts = None if args.no_checkpoints else CheckpointStore(store, PREFIX, keep=2)
    if args.kill_in_upload is not None and ckpts is not None:
        real_put_file, state = store.put_file, {"files": 0}

        def put_file(key, path, content_type=None):  # the checkpoint's first file lands, then the process dies
            if f"/files/" in key and trainer.step == args.kill_in_upload:
                state["files"] += 1
                if state["files"] == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_put_file(key, path, content_type)

        store.put_file = put_file
    if args.sigterm_handler:
        from spotline import interrupts

        def on_term(signum, frame):
            Path(args.out + ".sigterm").write_text(json.dumps({"at": time.time(), "step": trainer.step}))
            interrupts.request_stop("SIGTERM", 60)

        signal.signal(signal.SIGTERM, on_term)
        Path(args.out + ".ready").write_text("")

    def on_step(step: int, loss: float) -> None:
        if step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.exit_at_step:
            Path(args.out).write_text(json.dumps({"resumed_from": trainer.resumed_from, "lost_steps": trainer.lost_steps,
                                                  "started": started, "step": step}))
            os._exit(0)

    cfg = config(args.checkpoint_every, args.epochs)
    cfg = dataclasses.replace(cfg, threads=args.threads, max_steps=args.max_steps)
    if args.base_folder:
        from spotline.finetune.base_model import load_converted

        base, tokenizer = load_converted(Path(args.base_folder))
        cfg = dataclasses.replace(cfg, max_tokens=160, learning_rate=3e-4,
                                  target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
        examples = encode_pairs(tokenizer, sample_pairs(), cfg.max_tokens)
    else:
        base, tokenizer = tiny_model(), ByteTokenizer()
        examples = encode_pairs(tokenizer, pairs(args.examples), cfg.max_tokens)
    trainer = Trainer(cfg, lora_model(base, cfg), tokenizer, examples, ckpts, on_step=on_step, progress_every_s=0.0)
    started = time.time()
    Path(args.out + ".started").write_text(json.dumps({"at": started}))
    out = Path(args.out)
    try:
        result = trainer.run(out.parent / (out.stem + "-adapter"))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        from spotline.interrupts import Interrupted

        if isinstance(exc, Interrupted):
            out.write_text(json.dumps({"interrupted": str(exc), "step": trainer.step, "at": time.time()}))
            sys.exit(75)
        raise
    from safetensors.torch import load_file

    adapter = load_file(str(result.adapter_dir / "adapter.safetensors"))
    out.write_text(json.dumps({
        "steps": result.steps, "losses": result.losses, "tokens": result.tokens,
        "resumed_from": result.resumed_from, "lost_steps": result.lost_steps,
        "train_seconds": result.train_seconds, "checkpoint_seconds": result.checkpoint_seconds,
        "seconds": result.seconds, "checkpoints": result.checkpoints, "started": started, "ended": time.time(),
        "adapter": {k: v.flatten().tolist() for k, v in sorted(adapter.items())},
    }))


if __name__ == "__main__":
    main()
