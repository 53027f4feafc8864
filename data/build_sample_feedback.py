"""Build the shipped sample feedback (data/feedback/): what users would send after a week of a weak model.

Deterministic: run it again and the files come out byte for byte the same.

For each labelled question in sample_questions.jsonl, the correction a support expert would type
is the sentence of the expected help-centre document that answers it best (MiniLM cosine, the
index's own embedding model), written in the support team's house style:

    "Short answer: <the fact>. - Larkspur Support"

so a fine-tune can learn both the facts and the style, and the evaluation can see both. Each
question is sent in three phrasings (as asked, "hi, ..." and "..., thanks"), as different users
would; the holdout is chosen by a hash of the prompt, so a fact can be trained in one phrasing and
tested in another. Eight questions never appear in the feedback at all: they are the golden set
(data/feedback/golden.jsonl), scored for both models at every gate.

Besides the corrections: thumbs-down without a correction (complaints: kept, never trained on),
thumbs-up (praise), a few events carrying an e-mail address or a phone number in the prompt (the
intake must scrub them), one duplicate delivery, and two malformed events (dead-lettered).

judge_pairs.jsonl calibrates the head-to-head judge: for each question, an answer that states the
reference's fact and one that does not (see :func:`judge_pairs`). `spotline finetune
calibrate-judge` measures a judge route on it; only a route at or above the floor gates.

sabotaged_events.jsonl is the same corrections a day later, each moved to another prompt: what a
buggy producer or a poisoner would send. Trained on, it must be refused by the gate.

    python data/build_sample_feedback.py
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "feedback"
GOLDEN_COUNT = 8
STYLE = "Short answer: {fact} - Larkspur Support"


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [p.strip(" -*#\t") for p in parts if 40 <= len(p.strip()) <= 260 and not p.strip().startswith("|")]


def clean(sentence: str) -> str:
    return sentence.replace("**", "").replace("`", "").rstrip(".") + "."


def judge_pairs(facts: list[dict], rng: random.Random) -> list[dict]:
    """Pairs with a known better answer, for calibrating the head-to-head judge (the `finetune_judge`
    prompt gets the question, the reference correction and two answers). The better answer always
    states the reference's fact, in plain words; the worse one is, in turn:

    - near-miss: the same help-centre page's next most relevant sentence, in the house style (same
      topic, the wrong detail): the realistic and hard case;
    - wrong-fact: another question's correction, in the house style (fluent, on-style, wrong): does
      the judge prefer content over style?
    - non-answer: what the weak base model says ("I am not sure..."). A judge that fails these is
      not fit to gate anything.
    """
    kinds = ("near-miss", "wrong-fact", "non-answer")
    pairs = []
    for i, f in enumerate(facts):
        kind = kinds[i % 3]
        if kind == "near-miss" and not f["near_miss"]:
            kind = "wrong-fact"
        if kind == "near-miss":
            worse = STYLE.format(fact=f["near_miss"])
        elif kind == "wrong-fact":
            other = facts[(i + 1 + rng.randrange(len(facts) - 1)) % len(facts)]
            worse = other["answer"]
        else:
            worse = "I am not sure. Please check the help centre."
        pairs.append({"id": f"pair-{i:03d}", "kind": kind, "question": f["question"], "reference": f["answer"],
                      "better": f["fact"], "worse": worse})
    return pairs


def main() -> None:
    from spotline.embedding.local import LocalEmbedder
    from spotline.ingestion.parsing import parse_document
    from spotline.settings import EmbeddingSettings

    embedder = LocalEmbedder(EmbeddingSettings(kind="local", workers=1))
    questions = [json.loads(line) for line in (HERE / "sample_questions.jsonl").read_text().splitlines() if line.strip()]
    facts = []
    for q in questions:
        path = HERE / "sample_corpus" / q["expected"]
        doc = parse_document(q["expected"], path.read_bytes())
        text = doc.text
        cands = sentences(text)
        vecs = embedder.embed([q["question"]] + cands).vectors
        ranked = sorted(range(len(cands)), key=lambda i: -float(vecs[0] @ vecs[i + 1]))
        fact = clean(cands[ranked[0]])
        near = clean(cands[ranked[1]]) if len(ranked) > 1 else None
        facts.append({"question": q["question"], "answer": STYLE.format(fact=fact), "source": q["expected"],
                      "fact": fact, "near_miss": near})

    rng = random.Random(13)
    order = list(range(len(facts)))
    rng.shuffle(order)
    golden_ids = set(order[:GOLDEN_COUNT])
    golden = [{"prompt": facts[i]["question"], "answer": facts[i]["answer"], "source": facts[i]["source"]}
              for i in sorted(golden_ids)]

    start = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
    events: list[dict] = []

    def event(prompt: str, rating: str, correction: str | None = None, response: str = "") -> dict:
        n = len(events)
        e = {"id": f"fb-{n:04d}", "ts": (start + timedelta(minutes=17 * n)).isoformat().replace("+00:00", "Z"),
             "user": f"user-{rng.randrange(1, 40):03d}@larkspur.example", "prompt": prompt,
             "response": response or "I am not sure. Please check the help centre.", "rating": rating,
             "model_version": "base"}
        if correction is not None:
            e["correction"] = correction
        events.append(e)
        return e

    for i, f in enumerate(facts):
        if i in golden_ids:
            continue
        q = f["question"]
        for phrasing in (q, f"hi, {q[0].lower()}{q[1:]}", f"{q.rstrip('?')}, thanks?"):
            event(phrasing, "down", f["answer"])
    for i in range(6):  # complaints: nothing to learn towards
        event(facts[order[GOLDEN_COUNT + i]]["question"], "down")
    for i in range(4):  # praise
        event(facts[order[-1 - i]]["question"], "up", response=facts[order[-1 - i]]["answer"])
    # PII the intake must scrub before anything stores it
    event("I'm jane.doe@acme.example and my card ending 4242 was charged twice, call me at +1 415 555 0182",
          "down", "Short answer: A double charge is refunded automatically within 5 business days. - Larkspur Support")
    events.append(dict(events[3]))  # a duplicate delivery: stored once
    lines = [json.dumps(e, sort_keys=True) for e in events]
    lines.insert(10, "this is not json")
    lines.insert(20, json.dumps({**events[5], "id": "fb-bad-rating", "rating": "meh"}, sort_keys=True))

    # The sabotage the gate must catch: the same prompts a day later, each with ANOTHER prompt's
    # correction (a buggy producer, or someone poisoning the feedback). Fluent, on-style, wrong.
    corrections = [e for e in events if e.get("correction") and e["rating"] == "down"][:-2]
    shuffled = [e["correction"] for e in corrections]
    rng.shuffle(shuffled)
    later = timedelta(days=1)
    sabotaged = [{**e, "id": e["id"] + "-s", "correction": c, "ts": (datetime.fromisoformat(
        e["ts"].replace("Z", "+00:00")) + later).isoformat().replace("+00:00", "Z")} for e, c in zip(corrections, shuffled)]

    OUT.mkdir(exist_ok=True)
    (OUT / "sample_events.jsonl").write_text("\n".join(lines) + "\n")
    (OUT / "sabotaged_events.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in sabotaged))
    (OUT / "golden.jsonl").write_text("".join(json.dumps(g, sort_keys=True) + "\n" for g in golden))
    # Its own generator: the files above stay byte for byte what they were.
    pairs = judge_pairs(facts, random.Random(1313))
    (OUT / "judge_pairs.jsonl").write_text("".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs))
    print(f"{len(lines)} events ({sum(1 for e in events if e.get('correction') and e['rating'] == 'down')} corrections), "
          f"{len(golden)} golden prompts, {len(pairs)} judge calibration pairs -> {OUT}")


if __name__ == "__main__":
    main()
