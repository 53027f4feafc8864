"""Fine-tuning on Spot, measured: what checkpointing costs, how fast SIGTERM commits, what a kill loses.

    make bench-finetune            # Gemma 3 270M (converted once from the shipped GGUF, ~1 min the first time)
    python bench/finetune_bench.py --tiny   # the tests' tiny Gemma 3: the same loop, in seconds

Printed side by side, in one run, on this machine:
1. Training tokens/s of the same loop with checkpoints at the default interval
   (finetune.checkpoint_every) and without any, run alternately (A B A B) so drift hits both; the
   overhead is the ratio of their wall times. The checkpoints go to the local object store (a
   folder); on S3 the upload of the same files adds its transfer time, reported as bytes written.
2. SIGTERM -> committed checkpoint: a training process (tests/finetune/train_child.py) gets
   SIGTERM at a random moment; measured from the signal to the commit's timestamp and to the
   process's exit (Fargate allows 120 s).
3. SIGKILL at a random moment, then a resume: the steps redone (measured by the trainer from its
   progress marker) and the time lost (those steps, plus starting again: process, imports, model).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHILD = ROOT / "tests" / "finetune" / "train_child.py"
PREFIX = "_spotline/checkpoints/test-job/"


def base_folder(tiny: bool) -> Path | None:
    if tiny:
        return None
    from spotline.finetune.base_model import convert_once
    from spotline.llm.providers.local import default_gguf
    from spotline.settings import get_settings
    from spotline.storage.local import LocalObjectStore

    s = get_settings()
    store = LocalObjectStore(s.home / "bench-store")
    return convert_once(store, "_spotline/models/base/", default_gguf(s.home), s.home / "finetune" / "base")


def overhead(folder: Path | None, steps: int, every: int, threads: int) -> dict:
    import torch  # noqa: F401

    from spotline.finetune.checkpoints import CheckpointStore
    from spotline.finetune.trainer import TrainConfig, Trainer, encode_pairs, lora_model
    from spotline.storage.local import LocalObjectStore
    from tests.finetune import train_child as child

    if folder is not None:
        from spotline.finetune.base_model import load_converted

        base, tok = load_converted(folder)
        pairs, mods, max_tokens = child.sample_pairs(), ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"), 160
    else:
        base, tok = child.tiny_model(), child.ByteTokenizer()
        pairs, mods, max_tokens = child.pairs(400), ("q_proj", "k_proj", "v_proj", "o_proj"), 96
    results: dict[str, list] = {"without": [], "with": []}
    bytes_written = 0
    for rnd in range(2):
        for variant in ("without", "with"):
            cfg = TrainConfig(seed=1, epochs=100, batch_size=4, max_steps=steps, checkpoint_every=every,
                              target_modules=mods, max_tokens=max_tokens, threads=threads)
            tmp = Path(tempfile.mkdtemp())
            store = LocalObjectStore(tmp / "store")
            ckpts = CheckpointStore(store, PREFIX, keep=3) if variant == "with" else None
            examples = encode_pairs(tok, pairs, cfg.max_tokens)
            trainer = Trainer(cfg, lora_model(_fresh(base), cfg), tok, examples, ckpts)
            t0 = time.perf_counter()
            r = trainer.run(tmp / "out")
            wall = time.perf_counter() - t0
            results[variant].append((wall, r.tokens, r.checkpoint_seconds, r.checkpoints))
            if ckpts is not None:
                bytes_written = sum(f["bytes"] for f in ckpts.commits()[0].files.values())
            print(f"  round {rnd + 1} {variant:7} checkpoints: {wall:6.1f} s, {r.tokens / wall:7.0f} tokens/s"
                  + (f", {r.checkpoints} checkpoints in {r.checkpoint_seconds:.2f} s" if ckpts else ""), flush=True)
    a = statistics.mean(w for w, *_ in results["without"])
    b = statistics.mean(w for w, *_ in results["with"])
    tokens = results["with"][0][1]
    return {"without_tps": tokens / a, "with_tps": tokens / b, "overhead": b / a - 1, "bytes": bytes_written,
            "ckpt_s": statistics.mean(c for _, _, c, _ in results["with"]), "ckpts": results["with"][0][3]}


def _fresh(base):
    """A copy of the base for each variant (peft wraps the model it is given in place)."""
    import copy

    return copy.deepcopy(base)


def _progress(store, key: str) -> int:
    try:
        return json.loads(store.get(key))["step"]
    except Exception:  # noqa: BLE001 - not written yet
        return 0


def _child(store_dir: Path, out: Path, folder: Path | None, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(CHILD), str(store_dir), str(out), "--epochs", "100", "--threads", "2", *extra]
    if folder is not None:
        args += ["--base-folder", str(folder)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def sigterm(folder: Path | None, trials: int, rng: random.Random) -> list[dict]:
    from spotline.finetune.checkpoints import CheckpointStore
    from spotline.storage.local import LocalObjectStore

    out = []
    for i in range(trials):
        tmp = Path(tempfile.mkdtemp())
        store = LocalObjectStore(tmp / "store")
        proc = _child(tmp / "store", tmp / "r.json", folder, "--sigterm-handler", "--checkpoint-every", "1000",
                      "--max-steps", "400")
        while _progress(store, PREFIX + "progress.json") < 3:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 2.0))  # a random moment inside a step
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        exited = time.time()
        commit = CheckpointStore(store, PREFIX).commits()[0]
        committed = datetime.fromisoformat(json.loads(store.get(commit.key))["committed_at"]).timestamp()
        out.append({"commit_s": committed - sent, "exit_s": exited - sent, "step": commit.step, "rc": proc.returncode})
        print(f"  SIGTERM {i + 1}: checkpoint at step {commit.step} committed {committed - sent:.2f} s after the "
              f"signal, process exited after {exited - sent:.2f} s (exit {proc.returncode})", flush=True)
    return out


def sigkill(folder: Path | None, trials: int, every: int, rng: random.Random) -> list[dict]:
    from spotline.storage.local import LocalObjectStore

    out = []
    for i in range(trials):
        tmp = Path(tempfile.mkdtemp())
        store = LocalObjectStore(tmp / "store")
        proc = _child(tmp / "store", tmp / "r.json", folder, "--checkpoint-every", str(every), "--max-steps", "400")
        while _progress(store, PREFIX + "progress.json") < 1:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.02)
        first = time.time()
        time.sleep(rng.uniform(2, 2 + 25 * _step_hint(folder)))
        proc.kill()
        killed = time.time()
        proc.wait()
        reached = _progress(store, PREFIX + "progress.json")
        spawn = time.time()
        # The same settings (max_steps is part of the fingerprint): the attempt reports what it
        # resumed from once it has redone the lost steps and taken one new one, then exits.
        resumed = _child(tmp / "store", tmp / "r.json", folder, "--checkpoint-every", str(every),
                         "--max-steps", "400", "--exit-at-step", str(reached + 1))
        resumed.wait(timeout=600)
        assert resumed.returncode == 0, resumed.stderr.read()[-2000:]
        r = json.loads((tmp / "r.json").read_text())
        step_s = (killed - first) / max(1, reached - 1)
        startup = r["started"] - spawn  # process start, imports, model load: paid at every resume
        lost_s = r["lost_steps"] * step_s + startup
        out.append({"lost_steps": r["lost_steps"], "lost_s": lost_s, "startup_s": startup, "reached": reached})
        print(f"  SIGKILL {i + 1}: at step {reached}; resumed from {r['resumed_from'] or 0}: {r['lost_steps']} step(s) "
              f"redone (~{r['lost_steps'] * step_s:.1f} s) + {startup:.1f} s to start again = {lost_s:.1f} s lost",
              flush=True)
    return out


def _step_hint(folder: Path | None) -> float:
    return 1.7 if folder is not None else 0.05


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny Gemma 3 instead of the 270M model")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    from spotline.settings import FinetuneSettings

    every = FinetuneSettings().checkpoint_every
    rng = random.Random(7)
    folder = base_folder(args.tiny)
    model = "tiny Gemma 3 (2 layers)" if args.tiny else "Gemma 3 270M (LoRA r=8 on q,k,v,o,gate,up,down)"
    print(f"fine-tuning benchmark, {datetime.now().date()}, {model}, 2 threads, batch 4", flush=True)
    print(f"1. the same {args.steps} steps without and with a checkpoint every {every} steps:", flush=True)
    o = overhead(folder, args.steps, every, 2)
    print(f"2. SIGTERM at a random moment, {args.trials} times:", flush=True)
    t = sigterm(folder, args.trials, rng)
    print(f"3. SIGKILL at a random moment, then resume ({args.trials} times, checkpoint every {every} steps):", flush=True)
    k = sigkill(folder, args.trials, every, rng)
    print()
    print("| measure | result |")
    print("| --- | --- |")
    print(f"| training tokens/s without checkpoints | {o['without_tps']:.0f} |")
    print(f"| training tokens/s with a checkpoint every {every} steps | {o['with_tps']:.0f} "
          f"({o['ckpts']} checkpoints of {o['bytes'] / 1e6:.1f} MB in {o['ckpt_s']:.2f} s) |")
    print(f"| checkpointing overhead | {o['overhead']:+.1%} (goal: at most 10%) |")
    print(f"| SIGTERM -> checkpoint committed | max {max(x['commit_s'] for x in t):.2f} s, mean "
          f"{statistics.mean(x['commit_s'] for x in t):.2f} s |")
    print(f"| SIGTERM -> process exited | max {max(x['exit_s'] for x in t):.2f} s (Fargate allows 120 s) |")
    print(f"| steps redone after a SIGKILL | max {max(x['lost_steps'] for x in k)}, mean "
          f"{statistics.mean(x['lost_steps'] for x in k):.1f} (at most one interval: {every}) |")
    print(f"| time lost per SIGKILL (redone steps + restart) | max {max(x['lost_s'] for x in k):.1f} s, mean "
          f"{statistics.mean(x['lost_s'] for x in k):.1f} s (restart alone {statistics.mean(x['startup_s'] for x in k):.1f} s) |")


if __name__ == "__main__":
    main()
