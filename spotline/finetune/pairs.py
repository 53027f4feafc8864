"""Feedback -> the training set: prompt -> completion pairs, a holdout that never trains, a manifest.

- Only corrections become pairs: the completion is what the user said the answer should have been.
  A thumbs-down without a correction is kept aside as a complaint (counted, published in its own
  table for people to read) and never trained on: there is nothing to learn *towards*.
- The same prompt corrected twice keeps the latest correction (by event time, then id): the user's
  last word, and one target per prompt so the holdout split below cannot see a prompt on both sides.
- The holdout is chosen by a keyed hash of the normalised prompt, not by a random draw: the same
  prompt lands on the same side in every run, as feedback accumulates and as the set is rebuilt,
  so a prompt once held out never enters training later (which would make the holdout loss a
  training loss). ``salt`` names the split; changing it starts a new split on purpose.
- The content hash in the manifest covers the pairs themselves: equal data, equal hash, whatever
  the run; the trainer's checkpoints are keyed by it, so a resume never mixes two data sets.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

DEFAULT_SALT = "spotline-holdout-v1"
_SPACES = re.compile(r"\s+")


def normalise(prompt: str) -> str:
    return _SPACES.sub(" ", prompt.strip().lower())


def in_holdout(prompt: str, share: float, salt: str = DEFAULT_SALT) -> bool:
    digest = hashlib.sha256(f"{salt}\n{normalise(prompt)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class PairSet:
    train: pd.DataFrame  # id, prompt, completion, ts
    holdout: pd.DataFrame
    complaints: pd.DataFrame  # id, prompt, response, ts: not trained on
    content_hash: str
    dropped: dict[str, int]

    def pairs(self, which: str = "train") -> list[tuple[str, str]]:
        frame = self.train if which == "train" else self.holdout
        return list(zip(frame["prompt"], frame["completion"]))

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "holdout": len(self.holdout), "complaints": len(self.complaints),
                "content_hash": self.content_hash, "dropped": self.dropped}


COLUMNS = ["id", "prompt", "completion", "ts"]


def build(feedback: pd.DataFrame, holdout_share: float = 0.2, salt: str = DEFAULT_SALT,
          max_chars: int = 2000) -> PairSet:
    """The training set from every stored feedback row (the intake's dataset, all days)."""
    if not 0 < holdout_share < 1:
        raise ValueError("holdout_share must be between 0 and 1")
    dropped: dict[str, int] = {}
    if feedback.empty:
        empty = pd.DataFrame(columns=COLUMNS)
        return PairSet(empty, empty.copy(), pd.DataFrame(columns=["id", "prompt", "response", "ts"]),
                       _hash(empty, empty), dropped)
    rows = feedback.sort_values(["ts", "id"], kind="stable")
    complaints = rows[rows["kind"] == "complaint"][["id", "prompt", "response", "ts"]].reset_index(drop=True)
    corrections = rows[rows["kind"] == "correction"]
    too_long = (corrections["prompt"].str.len() > max_chars) | (corrections["correction"].str.len() > max_chars)
    if too_long.any():
        dropped["too-long"] = int(too_long.sum())
    corrections = corrections[~too_long]
    key = corrections["prompt"].map(normalise)
    latest = corrections.assign(_key=key).drop_duplicates("_key", keep="last")
    if len(latest) < len(corrections):
        dropped["superseded"] = len(corrections) - len(latest)
    pairs = latest.rename(columns={"correction": "completion"})[COLUMNS].sort_values("id", kind="stable")
    held = pairs["prompt"].map(lambda p: in_holdout(p, holdout_share, salt))
    train, holdout = pairs[~held].reset_index(drop=True), pairs[held].reset_index(drop=True)
    return PairSet(train, holdout, complaints, _hash(train, holdout), dropped)


def _hash(train: pd.DataFrame, holdout: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for name, frame in (("train", train), ("holdout", holdout)):
        h.update(name.encode())
        for pid, prompt, completion in zip(frame["id"], frame["prompt"], frame["completion"]):
            h.update(f"\x00{pid}\x01{prompt}\x02{completion}".encode())
    return h.hexdigest()
