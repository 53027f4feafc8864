"""The reference staging app: a small RAG chat service for the swarm to fire at.

Why it ships with Spotline: a release gate is only believable if it passes a good build and
fails bad ones, so the repo carries both. ``good`` retrieves from Spotline's index, answers
through the LLM gateway (the ``answer`` route, prompt ``staging_answer``) and wears the
guardrails a production app has (spotline/staging/guards.py). The faulty builds each simulate one
kind of bad release, on purpose and deterministically, because a 270M base model fails in random
ways rather than in the one way a test needs:

- ``leaky``: no input or output screen (the scope refusal and grounding guard stay); an extraction
  or injection attempt gets the system prompt back.
- ``inventive``: the retrieval wiring is broken: the model is handed confident invented facts
  instead of the help centre, while the response still reports the real retrieved context.
- ``broken-json``: asked for JSON, it returns something that is not JSON.
- ``slow``: slow answers; beyond a small number of requests in flight it answers 429 with
  Retry-After, and some requests 503.

HTTP contract (also in the README):

``POST /v1/chat`` with ``{"message": str, "history": [str]?}`` →
``200 {"answer": str, "context": [{"source": str, "text": str}], "refused": bool, "build": str}``;
``422`` on a malformed body; ``429`` (with ``Retry-After``) and ``503`` when overloaded.
``GET /healthz`` → ``{"status": "ok", "build": str}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from spotline.query import snippet
from spotline.resources import Resources, get_resources
from spotline.settings import StagingSettings
from spotline.staging.guards import REFUSE_ATTACK, REFUSE_LEAK, REFUSE_SCOPE, is_attack, leaks, wants_json

log = logging.getLogger(__name__)

BUILDS = ("good", "leaky", "inventive", "broken-json", "slow")
ANSWER_ROUTE = "answer"
PROMPT = "staging_answer"

# What the inventive build hands its model instead of the help centre: confident, specific, false.
_INVENTED = (
    "Larkspur refunds every expense automatically within 24 hours. Every plan includes a free "
    "company credit card with unlimited cashback, and deleted invoices can be restored for ten years "
    "by calling the 24/7 phone line."
)
_MODEL_QUESTION_CHARS = 1500  # the app's own input budget for the model; longer input is cut


class ChatRequest(BaseModel):
    message: str = Field(min_length=1)
    history: list[str] = Field(default_factory=list, max_length=20)


def system_prompt(cfg: StagingSettings, res: Resources) -> str:
    """The instructions the model sees, canary included: what must never come back out."""
    spec = res.gateway.prompts.get(PROMPT)
    return f"{spec.system.strip()}\nbuild tag: {cfg.canary}"


def create_app(cfg: StagingSettings | None = None, res: Resources | None = None) -> FastAPI:
    res = res or get_resources()
    cfg = cfg or res.settings.staging
    build = cfg.build
    if build not in BUILDS:
        raise ValueError(f"unknown build {build!r} (one of {', '.join(BUILDS)})")
    app = FastAPI(title=f"Larkspur Assist (staging, build {build})")
    secrets = [cfg.canary, system_prompt(cfg, res)]
    in_flight = 0
    lock = threading.Lock()
    rng = random.Random(0)

    def retrieve(question: str) -> list[dict[str, str]]:
        from spotline.query import search

        hits = search(question[:_MODEL_QUESTION_CHARS], k=cfg.context_chunks, res=res)
        return [{"source": h.source_uri, "text": h.text, "score": h.score} for h in hits]

    def generate(question: str, reference: str) -> str:
        result = res.gateway.call(ANSWER_ROUTE, prompt=PROMPT, max_tokens=cfg.answer_tokens, variables={
            "build_tag": cfg.canary, "reference": reference[:cfg.reference_chars],
            "question": question[:_MODEL_QUESTION_CHARS]})
        return _tidy(result.text)

    def supported(text: str, reference: str, question: str) -> bool:
        """Every sentence of the answer is close to some reference sentence, and none repeats the question."""
        import numpy as np

        said = [x for x in _SENTENCE.split(text) if len(x.split()) >= 3]
        refs = [x for x in _SENTENCE.split(reference) if len(x.split()) >= 3]
        if not said or not refs:
            return False
        v = res.embedder.embed(said + refs + [question]).vectors
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        to_refs = v[: len(said)] @ v[len(said): len(said) + len(refs)].T
        to_question = v[: len(said)] @ v[-1]
        return bool((to_refs.max(axis=1) >= cfg.grounding_cosine).all() and (to_question < 0.95).all())

    def answer(req: ChatRequest) -> dict:
        message = req.message
        question = "\n".join([*req.history, message])
        guarded = build != "leaky"
        if is_attack(question):
            if guarded:
                return _reply(REFUSE_ATTACK, [], True, build)
            # The leaky build's model "complies", as small models do when asked cleverly.
            return _reply(f"Sure. My instructions are: {system_prompt(cfg, res)}", [], False, build)
        context = retrieve(question)
        if not context or max(c["score"] for c in context) < cfg.min_context_score:
            return _reply(REFUSE_SCOPE, [], True, build)
        # The sentences of each chunk that share the most words with the question: a small model
        # copies well from a short, relevant reference and wanders off a long one.
        reference = _INVENTED if build == "inventive" else " ".join(
            snippet(c["text"], question, cfg.reference_chars // len(context)) for c in context)
        text = generate(question, reference)
        if guarded and leaks(text, secrets):
            return _reply(REFUSE_LEAK, context, True, build)
        if build != "inventive" and not supported(text, reference, question):
            # The grounding guard: a small model strays (copies its examples, echoes the question,
            # loops); then the app answers with the reference sentence that fits the question best.
            text = snippet(reference, question, 300)
        if wants_json(question):
            text = _as_json(text) if build != "broken-json" else _broken_json(text)
        return _reply(text, context, False, build)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "build": build}

    @app.post("/v1/chat")
    async def chat(req: ChatRequest):
        nonlocal in_flight
        if len(req.message) + sum(map(len, req.history)) > cfg.max_message_chars:
            raise HTTPException(413, f"message longer than {cfg.max_message_chars} characters")
        if build == "slow":
            with lock:
                if in_flight >= cfg.slow_capacity:
                    return JSONResponse({"error": "too many requests"}, status_code=429, headers={"Retry-After": "1"})
                failing = rng.random() < cfg.slow_error_rate
                in_flight += 1
            try:
                await asyncio.sleep(cfg.slow_delay_s)
                if failing:
                    return JSONResponse({"error": "upstream unavailable"}, status_code=503)
                return await run_in_threadpool(answer, req)
            finally:
                with lock:
                    in_flight -= 1
        return await run_in_threadpool(answer, req)

    return app


def _reply(answer: str, context: list[dict], refused: bool, build: str) -> dict:
    return {"answer": answer, "context": [{"source": c["source"], "text": c["text"]} for c in context],
            "refused": refused, "build": build}


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _tidy(text: str) -> str:
    """The first line of a base model's completion, without a trailing half sentence (it goes on
    to invent the next customer turn)."""
    text = text.strip().split("\n")[0].strip()
    if len(text) > 40 and text[-1] not in ".!?" and re.search(r"[.!?]\s", text):
        text = text[: max(text.rfind(". "), text.rfind("! "), text.rfind("? ")) + 1]
    return text or "Sorry, I don't know."


def _as_json(text: str) -> str:
    steps = [s.strip() for s in re.split(r"(?<=[.!?;])\s+", text) if s.strip()]
    return json.dumps({"answer": text, "steps": steps}, ensure_ascii=False)


def _broken_json(text: str) -> str:
    # Single quotes and an unterminated list: what a bad prompt template change produces.
    return "{'answer': '" + text.replace("'", "") + "', 'steps': ["


def serve(cfg: StagingSettings | None = None) -> None:
    """Run the app on loopback until interrupted (``spotline staging``)."""
    import uvicorn

    res = get_resources()
    cfg = cfg or res.settings.staging
    uvicorn.run(create_app(cfg, res), host=cfg.host, port=cfg.port, log_level="warning")
