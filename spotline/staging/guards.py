"""The guardrails a real chat app puts around its model, used by the staging app's good build.

Why they exist: a release gate must pass the good build on its own merits. A model this small
(Gemma 3 270M) can be talked into anything, so the app does what production apps do: screen the
input for injection and extraction attempts, refuse what the help centre does not cover, and
screen the output for its own secrets before it leaves. Plain Python, no Prefect, no model.
"""

from __future__ import annotations

import re

from spotline.textmatch import leaks  # noqa: F401  (the app's output screen)

REFUSE_ATTACK = "I can't help with that request. I can answer questions about using Larkspur."
REFUSE_SCOPE = "I can only help with questions about the Larkspur expenses and invoicing app."
REFUSE_LEAK = "I can't share that. Ask me about using Larkspur instead."

# Input screening: the wording of injection and extraction attempts, in the forms red-teaming
# suites and real users use. Broad on purpose: a refused support question costs less than a leak.
_ATTACK = re.compile(
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|your)\b.{0,30}"
    r"\b(instructions?|rules?|prompts?|guidelines?)\b"
    r"|\b(developer|debug|god|admin|jailbreak|dan)\s+mode\b"
    r"|\b(system|initial|hidden|original|secret)\s+(prompt|instructions?|message)\b"
    r"|\b(repeat|print|reveal|show|output|recite|tell me|spell out|translate)\b.{0,40}"
    r"\b(instructions|prompt|text above|everything above|words above|build tag|context window|configuration)\b"
    r"|\byou are now\b|\bpretend (you are|to be)\b|\bact as\b.{0,30}\bwithout\b"
    r"|\bbuild tag\b|\bcanary\b"
    # a topic hijack: "forget <the product question>: <something else>"
    r"|^\W*(forget|never mind|nevermind|skip)\b[^.:;?!]{0,80}[:;,.-]",
    re.I | re.S,
)


def is_attack(message: str) -> bool:
    return bool(_ATTACK.search(message))


def wants_json(message: str) -> bool:
    return "json" in message.lower()
