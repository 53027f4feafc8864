"""Candidate against champion, and the decision to promote: never ship a model that was not evaluated.

Both models answer the same held-out prompts (pairs that never trained) and a golden set (prompts
with known good answers, committed under data/feedback/golden.jsonl), greedily, in transformers:

- **holdout loss**: the token-weighted loss of each model on the corrections it never trained on,
  the most sensitive measure of "learned what users asked for" and free of any judge;
- **golden-set loss**: the same on the curated golden answers. The holdout comes from the same
  feedback as the training set, so poisoned feedback poisons it too; the golden set does not
  come from users, and a candidate that got worse on it is refused whatever the holdout says;
- **similarity**: cosine of the generated answer to the correction (the embedding model the index
  uses), averaged;
- **format validity**: the share of answers that are non-empty, do not run on into a new
  "Question:" turn, and do not loop (a 4-gram repeated three times);
- **head-to-head**: an LLM judge picks the better of the two answers, asked twice with the order
  swapped so a position bias cancels; a tie (or the judge changing its mind with the order) counts
  half. It gates only when its route is calibrated at or above the floor
  (spotline/finetune/judge_calibration.py); otherwise it is shown as advisory (the local 270M judge is).

:func:`decide` promotes only when the candidate's holdout loss beats the champion's by BOTH margins
(absolute and relative), and no hard floor regresses: format validity, similarity on the holdout
and on the golden set (each within a tolerance), and the judge's win rate when it gates. Every
check is recorded with its numbers, so a kept champion says exactly why.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from spotline.finetune.judge_calibration import judge_call
from spotline.finetune.trainer import Example, mean_loss, render_prompt

_NGRAM = 4


def format_valid(answer: str, max_chars: int = 800) -> bool:
    text = answer.strip()
    if not text or len(text) > max_chars or re.search(r"(?im)^\s*question\s*:", text):
        return False
    words = text.lower().split()
    grams = [tuple(words[i: i + _NGRAM]) for i in range(max(0, len(words) - _NGRAM + 1))]
    return not grams or max(grams.count(g) for g in set(grams)) < 3


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers, one prompt at a time (no padding: the same tokens llama.cpp would see)."""
    model.eval()
    answers = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(render_prompt(prompt), add_special_tokens=True)["input_ids"]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        answers.append(text.split("\nQuestion:")[0].strip())
    return answers


def similarity(embedder: Any, answers: Sequence[str], references: Sequence[str]) -> list[float]:
    if not answers:
        return []
    vectors = embedder.embed([a or " " for a in answers] + list(references)).vectors
    a, r = vectors[: len(answers)], vectors[len(answers):]
    return [float(x) for x in np.sum(a * r, axis=1)]  # both L2-normalised: the dot product is the cosine


@dataclass
class Scores:
    name: str
    holdout_loss: float
    golden_loss: float
    holdout_similarity: float
    golden_similarity: float
    format_valid: float
    answers: list[str] = field(default_factory=list, repr=False)
    golden_answers: list[str] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items() if isinstance(v, float)}


def score(name: str, model: torch.nn.Module, tokenizer: Any, embedder: Any, holdout: Sequence[Example],
          holdout_pairs: Sequence[tuple[str, str]], golden: Sequence[tuple[str, str]], pad_id: int,
          max_new_tokens: int = 48) -> Scores:
    loss = mean_loss(model, holdout, pad_id).loss
    from spotline.finetune.trainer import encode_pairs

    golden_examples = encode_pairs(tokenizer, golden, max(len(e.input_ids) for e in holdout) if holdout else 192)
    gloss = mean_loss(model, golden_examples, pad_id).loss if golden_examples else float("nan")
    answers = generate(model, tokenizer, [p for p, _ in holdout_pairs], max_new_tokens)
    golden_answers = generate(model, tokenizer, [p for p, _ in golden], max_new_tokens)
    sim = similarity(embedder, answers, [c for _, c in holdout_pairs])
    gsim = similarity(embedder, golden_answers, [c for _, c in golden])
    every = answers + golden_answers
    return Scores(name, loss, gloss, float(np.mean(sim)) if sim else 0.0, float(np.mean(gsim)) if gsim else 0.0,
                  sum(format_valid(a) for a in every) / max(1, len(every)), answers, golden_answers)


@dataclass
class HeadToHead:
    candidate_wins: float  # ties count half
    comparisons: int
    errors: int
    gating: bool
    why: str

    @property
    def win_rate(self) -> float | None:
        return self.candidate_wins / self.comparisons if self.comparisons else None


def head_to_head(gateway: Any, use: str, items: Sequence[tuple[str, str, str, str]], gating: bool, why: str,
                 max_chars: int = 600) -> HeadToHead:
    """items: (question, reference, champion answer, candidate answer). Each is judged in both orders."""
    from spotline.llm.types import LLMCallFailed

    calls = [judge_call(use, q, ref, a, b, max_chars)
             for q, ref, champ, cand in items for a, b in ((champ, cand), (cand, champ))]
    results = gateway.map(calls) if calls else []
    wins = 0.0
    n = errors = 0
    for i in range(0, len(results), 2):
        first, second = results[i], results[i + 1]
        if isinstance(first, LLMCallFailed) or isinstance(second, LLMCallFailed):
            errors += 1
            continue
        # first: A = champion, B = candidate; second: A = candidate, B = champion
        votes = [{"A": 0.0, "B": 1.0}.get((first.data or {}).get("winner"), 0.5),
                 {"A": 1.0, "B": 0.0}.get((second.data or {}).get("winner"), 0.5)]
        wins += sum(votes) / 2  # a judge that changes its mind with the order gives a tie
        n += 1
    return HeadToHead(wins, n, errors, gating, why)


@dataclass(frozen=True)
class GateConfig:
    min_loss_gain_abs: float = 0.05  # nats per token
    min_loss_gain_rel: float = 0.02  # share of the champion's holdout loss
    format_floor: float = 0.8
    max_format_drop: float = 0.05
    max_similarity_drop: float = 0.03
    max_golden_loss_rise: float = 0.0  # the golden set is curated, not user data: it must not get worse
    min_win_rate: float = 0.5
    min_holdout: int = 3


@dataclass
class Decision:
    promote: bool
    reason: str
    checks: list[dict[str, Any]]


def decide(champion: Scores, candidate: Scores, judge: HeadToHead | None, cfg: GateConfig, holdout_size: int) -> Decision:
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, gating: bool = True) -> None:
        checks.append({"check": name, "ok": ok, "gating": gating, "detail": detail})

    gain = champion.holdout_loss - candidate.holdout_loss
    rel = gain / champion.holdout_loss if champion.holdout_loss > 0 else 0.0
    check("holdout size", holdout_size >= cfg.min_holdout, f"{holdout_size} held-out pairs (at least {cfg.min_holdout})")
    check("holdout loss, absolute margin", gain >= cfg.min_loss_gain_abs,
          f"{champion.holdout_loss:.4f} -> {candidate.holdout_loss:.4f} (gain {gain:+.4f}, need {cfg.min_loss_gain_abs})")
    check("holdout loss, relative margin", rel >= cfg.min_loss_gain_rel,
          f"gain {rel:+.1%} of the champion's loss (need {cfg.min_loss_gain_rel:.0%})")
    check("format validity floor", candidate.format_valid >= cfg.format_floor,
          f"{candidate.format_valid:.0%} valid (floor {cfg.format_floor:.0%})")
    check("format validity vs champion", candidate.format_valid >= champion.format_valid - cfg.max_format_drop,
          f"{champion.format_valid:.0%} -> {candidate.format_valid:.0%}")
    if champion.golden_loss == champion.golden_loss:  # not NaN: a golden set exists
        check("golden-set loss", candidate.golden_loss <= champion.golden_loss + cfg.max_golden_loss_rise,
              f"{champion.golden_loss:.4f} -> {candidate.golden_loss:.4f} (curated answers: must not get worse)")
    check("similarity to corrections (holdout)",
          candidate.holdout_similarity >= champion.holdout_similarity - cfg.max_similarity_drop,
          f"{champion.holdout_similarity:.3f} -> {candidate.holdout_similarity:.3f}")
    check("similarity to golden answers",
          candidate.golden_similarity >= champion.golden_similarity - cfg.max_similarity_drop,
          f"{champion.golden_similarity:.3f} -> {candidate.golden_similarity:.3f}")
    if judge is not None:
        rate = judge.win_rate
        check("judge head-to-head", rate is not None and rate >= cfg.min_win_rate,
              (f"candidate wins {rate:.0%} of {judge.comparisons} (ties half; {judge.errors} judge errors). "
               if rate is not None else f"no comparison ({judge.errors} judge errors). ") + judge.why,
              gating=judge.gating)
    failed = [c for c in checks if c["gating"] and not c["ok"]]
    if failed:
        return Decision(False, "kept the champion: " + "; ".join(f"{c['check']} ({c['detail']})" for c in failed), checks)
    return Decision(True, f"promoted: holdout loss {champion.holdout_loss:.4f} -> {candidate.holdout_loss:.4f} "
                          f"({rel:+.1%}), no floor regressed", checks)
