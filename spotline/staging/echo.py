"""A model-free target with the staging app's HTTP contract: the harness's own yardstick.

Why it exists: the swarm's throughput and back-off are measured against something that costs
nothing per request (the benchmark's "zero-latency local target"), and tested against a target
that throttles on purpose. It answers at once (or after ``delay_s``), answers 429 with
Retry-After beyond ``capacity`` requests in flight, and reports the peak it saw at ``GET /stats``.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_echo_app(capacity: int | None = None, delay_s: float = 0.0, retry_after_s: float = 0.2) -> FastAPI:
    app = FastAPI(title="echo target")
    state = {"in_flight": 0, "peak": 0, "served": 0, "throttled": 0}

    @app.get("/stats")
    async def stats() -> dict:
        return dict(state)

    @app.post("/v1/chat")
    async def chat(request: Request):
        body = await request.json()
        if capacity is not None and state["in_flight"] >= capacity:
            state["throttled"] += 1
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": str(retry_after_s)})
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        try:
            if delay_s:
                await asyncio.sleep(delay_s)
            state["served"] += 1
            return {"answer": f"echo: {body.get('message', '')[:200]}", "context": [], "refused": False}
        finally:
            state["in_flight"] -= 1

    return app
