"""The LLM gateway: one way for every flow to call models (local llama.cpp, Bedrock, OpenAI-compatible)."""

from spotline.llm.gateway import Gateway, UsageLedger
from spotline.llm.types import CallUsage, LLMCallFailed, LLMError, LLMResult, Message

__all__ = ["Gateway", "UsageLedger", "CallUsage", "LLMCallFailed", "LLMError", "LLMResult", "Message"]
