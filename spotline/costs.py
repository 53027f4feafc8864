"""Cost estimates from the price table in settings. Every flow's summary artifact uses these."""

from __future__ import annotations

from spotline.settings import PriceSettings


def _base_model(model_id: str) -> str:
    return model_id.split("@", 1)[0]  # "amazon.titan-embed-text-v2:0@1024" -> price key


def embedding_cost(prices: PriceSettings, model_id: str, tokens: int) -> float | None:
    """USD for embedding `tokens` with `model_id`; None when the model has no price entry."""
    per_1m = prices.embedding_per_1m.get(_base_model(model_id))
    return None if per_1m is None else tokens * per_1m / 1_000_000


def llm_cost(prices: PriceSettings, model_id: str, input_tokens: int, output_tokens: int) -> float | None:
    """USD for one LLM call; None when the model has no price entry (shown as n/a, never as free)."""
    price = prices.llm_per_1m.get(model_id)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def compute_cost(prices: PriceSettings, seconds: float, vcpus: float = 1.0) -> float:
    """What the same wall time costs on Fargate Spot (the reference figure is 1 vCPU + 2 GB)."""
    return seconds / 3600 * prices.fargate_spot_vcpu_hour * vcpus


def usd(value: float | None) -> str:
    if value is None:
        return "n/a (no price configured)"
    return f"${value:.6f}" if value < 0.01 else f"${value:,.4f}"
