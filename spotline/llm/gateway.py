"""The LLM gateway: the one way Spotline's flows call language models. Plain Python, no Prefect.

One call shape for every provider::

    result = gateway.call("judge", prompt="answer_grade", variables={...})
    result.data        # the validated object (the prompt has an output schema)
    result.usage       # tokens, latency, cost, cache hit, provider, model, prompt name/version/hash

What happens inside, in order:

1. the *use* ("generator", "judge"...) picks a chain of models from settings (its fallbacks);
2. the prompt is rendered (chat messages and a completion-style text for base models) and hashed;
3. per model: skip it if its provider's circuit is open; answer from the cache if an identical
   call was made within the TTL, or wait for an identical call already in flight;
4. call the provider inside the limiter (bounded concurrency and rate per provider), retrying
   throttling / 5xx / timeouts with exponential backoff and full jitter, honouring Retry-After;
5. validate structured output against the schema; on invalid output re-ask a bounded number of
   times (with the error, or a larger token budget when the answer was cut off);
6. if the model still fails, go to the next model in the chain; if all fail, raise
   :class:`~spotline.llm.types.LLMCallFailed` (the one type a flow catches and counts).

Every model tried leaves a :class:`~spotline.llm.types.CallUsage` row in :attr:`Gateway.ledger`
and one JSON log line on the ``spotline.llm.calls`` logger.
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import jsonschema
import pandas as pd

from spotline.costs import llm_cost
from spotline.llm.cache import ResponseCache, cache_key
from spotline.llm.limits import CircuitBreaker, Limiter, LocalLimiter
from spotline.llm.prompts import PromptLibrary, PromptSpec, RenderedPrompt
from spotline.llm.providers import Provider
from spotline.llm.types import (
    CallUsage,
    CircuitOpen,
    Completion,
    LLMCallFailed,
    call_failed,
    LLMError,
    LLMResult,
    Message,
    ProviderRejected,
    ProviderRequest,
    ProviderUnavailable,
    SchemaViolation,
)
from spotline.secrets import SecretResolver, redact
from spotline.settings import ModelSpec, Settings
from spotline.storage import ObjectStore
from spotline.usage import current_scope

calls_log = logging.getLogger("spotline.llm.calls")
log = logging.getLogger(__name__)

REPAIR_INSTRUCTION = (
    "Your previous reply was not valid: {error}. Reply again with only a JSON object that matches the schema."
)


class UsageLedger:
    """Every model tried by this gateway, for the per-run cost/usage artifact."""

    def __init__(self) -> None:
        self._rows: list[CallUsage] = []
        self._lock = threading.Lock()

    def add(self, usage: CallUsage) -> None:
        with self._lock:
            self._rows.append(usage)

    def rows(self, scope: str | None = None) -> list[CallUsage]:
        """Every row, or only one scope's (a flow run's: spotline.usage)."""
        with self._lock:
            return [r for r in self._rows if scope is None or r.scope == scope]

    def summary(self, scope: str | None = None) -> list[dict[str, Any]]:
        """One row per (provider, model): calls, tokens, cost, cache hits and savings, errors by kind."""
        rows = self.rows(scope)
        if not rows:
            return []
        df = pd.DataFrame([r.as_dict() for r in rows])
        df["ok"] = df["outcome"] == "ok"
        df["cost_known"] = df["cost_usd"].notna()
        out = []
        for (provider, model), g in df.groupby(["provider", "model"], sort=True):
            errors = g.loc[~g["ok"], "outcome"].value_counts().to_dict()
            out.append({
                "provider": provider,
                "model": model,
                "calls": int(len(g)),
                "ok": int(g["ok"].sum()),
                "cache_hits": int(g["cache_hit"].sum()),
                "input_tokens": int(g["input_tokens"].sum()),
                "output_tokens": int(g["output_tokens"].sum()),
                "cost_usd": round(float(g["cost_usd"].fillna(0).sum()), 6) if g["cost_known"].all() else None,
                "saved_usd": round(float(g["saved_usd"].sum()), 6),
                "p50_latency_s": round(float(g.loc[~g["cache_hit"], "latency_s"].median()), 3)
                if (~g["cache_hit"]).any() else 0.0,
                "repairs": int(g["repairs"].sum()),
                "errors": ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none",
            })
        return out


class Gateway:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore | None,
        *,
        providers: dict[str, Provider] | None = None,
        limiter: Limiter | None = None,
        secrets: SecretResolver | None = None,
        prompts: PromptLibrary | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings, self.cfg = settings, settings.llm
        self.secrets = secrets or SecretResolver(self.cfg.secret_ttl_s, region=self.cfg.bedrock_region)
        self.prompts = prompts or PromptLibrary(self.cfg.prompts_dir)
        self.limiter: Limiter = limiter or LocalLimiter(self.cfg.concurrency, self.cfg.rate_per_minute)
        self.cache = (
            ResponseCache(store, settings.layout.llm_cache, self.cfg.cache_ttl_s,
                          self.cfg.cache_memory_entries)
            if store is not None and self.cfg.cache_enabled else None
        )
        self._providers: dict[str, Provider] = dict(providers or {})
        self._providers_lock = threading.Lock()
        self.breakers: dict[str, CircuitBreaker] = defaultdict(
            lambda: CircuitBreaker(self.cfg.breaker_failures, self.cfg.breaker_cooldown_s)
        )
        self._breakers_lock = threading.Lock()
        self.ledger = UsageLedger()
        self.sleep = sleep
        self.store = store
        self._aliases: dict[str, tuple[float, ModelSpec]] = {}  # registry alias -> (when resolved, model)

    # ---- wiring -------------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        existing = self._providers.get(name)  # lock-free fast path: 64 threads share this per call
        if existing is not None:
            return existing
        with self._providers_lock:
            if name not in self._providers:
                if name == "local":
                    from spotline.llm.providers.local import LlamaCppProvider

                    self._providers[name] = LlamaCppProvider(self.settings.home, self.cfg.local_threads,
                                                            grammar_sampling=self.cfg.local_grammar)
                elif name == "bedrock":
                    from spotline.llm.providers.bedrock import BedrockConverseProvider

                    self._providers[name] = BedrockConverseProvider(self.cfg)
                elif name == "openai":
                    from spotline.llm.providers.openai_compat import OpenAICompatibleProvider

                    self._providers[name] = OpenAICompatibleProvider(self.cfg, self.secrets)
                else:
                    raise ProviderRejected(f"unknown provider {name!r}")
            return self._providers[name]

    def breaker(self, provider: str) -> CircuitBreaker:
        existing = self.breakers.get(provider)
        if existing is not None:
            return existing
        with self._breakers_lock:
            return self.breakers[provider]

    def chain(self, use: str) -> list[tuple[str, ModelSpec]]:
        routes = self.cfg.routes or {}
        names = routes.get(use) or routes.get("default")
        if not names:
            raise KeyError(f"no llm.routes entry for use {use!r} and no 'default' route")
        return [(n, self.cfg.models[n]) for n in names]

    # ---- the call -----------------------------------------------------------------------------
    def call(
        self,
        use: str = "default",
        *,
        prompt: str | PromptSpec | None = None,
        variables: dict[str, Any] | None = None,
        messages: Sequence[Message | dict[str, str]] | None = None,
        text: str | None = None,
        schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        cache: bool | None = None,
        models: Sequence[str] | None = None,
        seed: int = 0,
    ) -> LLMResult:
        """Call the use's models in order until one returns valid output. Raises LLMCallFailed.

        `cache=None` caches deterministic calls (temperature 0) only; `True` caches sampled ones too.
        """
        rendered, spec = self._render(prompt, variables, messages, text)
        schema = schema if schema is not None else (spec.output_schema if spec else None)
        temperature = temperature if temperature is not None else (spec.temperature if spec else 0.0)
        max_tokens = max_tokens or (spec.max_tokens if spec and spec.max_tokens else self.cfg.max_tokens)
        cacheable = self.cache is not None and (cache if cache is not None else temperature == 0)
        unknown = [n for n in models or () if n not in self.cfg.models]
        if unknown:
            raise KeyError(f"unknown model(s) {unknown}; known: {sorted(self.cfg.models)}")
        chain = [(n, self.cfg.models[n]) for n in models] if models else self.chain(use)
        request = ProviderRequest(
            messages=rendered.messages, text=rendered.text, schema=schema, max_tokens=max_tokens,
            temperature=temperature, stop=rendered.stop if spec else (), timeout_s=self.cfg.timeout_s, seed=seed,
        )
        tried: list[CallUsage] = []
        for _name, model in chain:
            if model.registry_alias:
                try:
                    model = self._resolve_alias(model)
                except LLMError as exc:  # the registry is unreadable: this model fails, the chain goes on
                    usage = CallUsage(use=use, provider=model.provider, model=model.model_id, outcome=exc.outcome,
                                      error=str(exc)[:500])
                    self._record(usage)
                    tried.append(usage)
                    continue
            usage = CallUsage(
                use=use, provider=model.provider, model=model.model_id,
                prompt=spec.name if spec else "", prompt_version=spec.version if spec else "",
                prompt_hash=rendered.hash,
            )
            started = time.perf_counter()
            try:
                result = self._call_model(model, request, usage, cacheable)
            except LLMError as exc:
                usage.outcome, usage.error = exc.outcome, str(exc)[:500]
            except Exception as exc:  # a provider bug must cost one call, never the run
                usage.outcome, usage.error = "error", redact(f"{type(exc).__name__}: {exc}")[:500]
                log.exception("unexpected error from %s", model.model_id)
            else:
                usage.latency_s = time.perf_counter() - started
                self._record(usage)
                result.tried = tried
                return result
            usage.latency_s = time.perf_counter() - started
            self._record(usage)
            tried.append(usage)
        raise call_failed(use, tried)

    def map(self, calls: Sequence[dict[str, Any]], max_workers: int | None = None) -> list[LLMResult | LLMCallFailed]:
        """Run many calls in parallel (each a dict of :meth:`call` arguments); results in input order.
        A failed call yields its LLMCallFailed in place: one bad item never sinks the batch."""

        def one(kwargs: dict[str, Any]) -> LLMResult | LLMCallFailed:
            try:
                return self.call(**kwargs)
            except LLMCallFailed as exc:
                return exc
            except Exception as exc:  # a bad item (missing prompt variable, unknown model): typed, in place
                usage = CallUsage(use=kwargs.get("use", "default"), provider="", model="", outcome="bad_request",
                                  error=redact(f"{type(exc).__name__}: {exc}")[:500])
                self._record(usage)
                return call_failed(usage.use, [usage])

        workers = max_workers or max(1, min(64, sum(self.cfg.concurrency.values())))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
            # each call runs in a copy of the caller's context: a Prefect run's settings, client and
            # logger reach the worker threads (a plain thread would see none of them)
            futures = [pool.submit(contextvars.copy_context().run, one, kwargs) for kwargs in calls]
            return [f.result() for f in futures]

    # ---- internals ----------------------------------------------------------------------------
    def _resolve_alias(self, model: ModelSpec) -> ModelSpec:
        """A registry alias (``champion``) as the concrete model it names now: the base GGUF plus that
        version's GGUF LoRA, downloaded once per version and checked against its manifest. Looked up
        at most every ``registry_ttl_s``, so a promotion or a rollback reaches running workers within
        that time without a registry read per call. The version goes into the model id, so cached
        answers of one version are never served for another."""
        now = time.monotonic()
        cached = self._aliases.get(model.registry_alias)
        if cached is not None and now - cached[0] < self.cfg.registry_ttl_s:
            return cached[1]
        if self.store is None:
            raise ProviderRejected(f"registry alias {model.registry_alias!r} needs an object store")
        from spotline.finetune.registry import Registry, RegistryError

        registry = Registry(self.store, self.settings.layout.models)
        try:
            version = registry.resolve(model.registry_alias)
            if version is None:
                raise ProviderRejected(f"registry alias {model.registry_alias!r} points at no version yet")
            lora = None
            if version.has("adapter.gguf"):
                lora = registry.fetch(version, "adapter.gguf",
                                      self.settings.home / "models" / "registry" / version.version / "adapter.gguf")
        except RegistryError as exc:
            raise ProviderRejected(f"registry alias {model.registry_alias!r}: {exc}") from None
        resolved = model.model_copy(update={"registry_alias": None, "lora": lora,
                                            "model_id": f"{model.model_id}+{version.version}"})
        self._aliases[model.registry_alias] = (now, resolved)
        return resolved

    def _render(self, prompt, variables, messages, text) -> tuple[RenderedPrompt, PromptSpec | None]:
        if prompt is not None:
            spec = prompt if isinstance(prompt, PromptSpec) else self.prompts.get(prompt)
            return spec.render(variables or {}), spec
        if messages:
            msgs = tuple(m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages)
        elif text is not None:
            msgs = (Message("user", text),)
        else:
            raise ValueError("call() needs a prompt name, messages or text")
        completion = text if text is not None else "\n\n".join(
            m.content if m.role == "system" else f"{m.role.capitalize()}: {m.content}" for m in msgs
        ) + "\n\nAssistant:"
        return RenderedPrompt(None, msgs, completion, stop=()), None

    def _cache_key(self, model: ModelSpec, request: ProviderRequest, usage: CallUsage) -> str:
        return cache_key({
            "provider": model.provider, "model": model.model_id, "gguf": str(model.gguf or ""),
            "lora": str(model.lora or ""), "base_url": model.base_url or "", "prompt": usage.prompt,
            "prompt_version": usage.prompt_version, "prompt_hash": usage.prompt_hash,
            "messages": [m.__dict__ for m in request.messages] if model.provider != "local" else request.text,
            "schema": request.schema, "max_tokens": request.max_tokens, "temperature": request.temperature,
            "stop": list(request.stop), "seed": request.seed if request.temperature > 0 else 0,
        })

    def _call_model(self, model: ModelSpec, request: ProviderRequest, usage: CallUsage, cacheable: bool) -> LLMResult:
        if not cacheable:
            return self._compute(model, request, usage)
        key = self._cache_key(model, request, usage)
        hit = self._from_cache(key, usage)
        if hit:
            return hit
        with self.cache.single_flight(key) as flight:
            if flight.leader is not None:  # an identical call is in flight: share its outcome
                budget = (self.cfg.repair_attempts + 1) * self.cfg.max_attempts * (
                    self.cfg.timeout_s + self.cfg.backoff_max_s) + 60
                flight.leader.result(timeout=budget)  # re-raises the leader's error: this model failed
                hit = self._from_cache(key, usage)
                if hit:
                    return hit
            try:
                result = self._compute(model, request, usage)
            except BaseException as exc:
                flight.fail(exc)
                raise
            self.cache.put(key, {"text": result.text, "data": result.data, "input_tokens": usage.input_tokens,
                                 "output_tokens": usage.output_tokens, "cost_usd": usage.cost_usd,
                                 "model": model.model_id})
            return result

    def _from_cache(self, key: str, usage: CallUsage) -> LLMResult | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        usage.cache_hit, usage.cost_usd = True, 0.0
        usage.saved_usd = float(entry.get("cost_usd") or 0.0)
        return LLMResult(entry["text"], entry.get("data"), usage)

    def _compute(self, model: ModelSpec, request: ProviderRequest, usage: CallUsage) -> LLMResult:
        validator = _validator(request.schema) if request.schema else None
        for repair in range(self.cfg.repair_attempts + 1):
            completion = self._with_retries(model, request, usage)
            usage.input_tokens += completion.input_tokens
            usage.output_tokens += completion.output_tokens
            cost = llm_cost(self.settings.prices, model.model_id, usage.input_tokens, usage.output_tokens)
            usage.cost_usd = 0.0 if cost is None and model.provider == "local" else cost
            if validator is None:
                return LLMResult(completion.text, None, usage)
            data, error = _parse(completion, validator)
            if error is None:
                return LLMResult(completion.text, data, usage)
            if repair == self.cfg.repair_attempts:
                raise SchemaViolation(f"{model.model_id} output violates the schema after {repair} repair(s): {error}",
                                      completion.text)
            usage.repairs += 1
            request = _repaired(request, completion, error)
        raise AssertionError("unreachable")

    def _with_retries(self, model: ModelSpec, request: ProviderRequest, usage: CallUsage) -> Completion:
        provider = self.provider(model.provider)
        breaker = self.breaker(model.provider)
        attempts = max(1, self.cfg.max_attempts)
        for attempt in range(1, attempts + 1):
            if not breaker.allow():
                raise CircuitOpen(f"{model.provider} circuit is open after repeated failures; skipped")
            usage.attempts += 1
            try:
                with self.limiter.slot(model.provider):
                    completion = provider.complete(model, request)
            except ProviderUnavailable as exc:
                if exc.throttled:  # a busy provider is alive: throttling is the limiter's business
                    breaker.release_trial()
                else:
                    breaker.failure()
                if attempt == attempts:
                    raise
                backoff = random.uniform(0, min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempt - 1)))
                delay = exc.retry_after_s if exc.retry_after_s is not None else backoff
                if delay > self.cfg.backoff_max_s:  # the provider asks for a long pause: fall back instead
                    raise
                log.info("retrying %s in %.2fs after: %s", model.model_id, delay, exc)
                self.sleep(delay)
            except ProviderRejected:
                breaker.success()  # the provider answered; the request was the problem
                raise
            except BaseException:  # not the provider's verdict (a missing secret, a cancellation...)
                breaker.release_trial()
                raise
            else:
                breaker.success()
                return completion
        raise AssertionError("unreachable")

    def _record(self, usage: CallUsage) -> None:
        usage.scope = usage.scope or current_scope()
        self.ledger.add(usage)
        if calls_log.isEnabledFor(logging.INFO):
            calls_log.info(json.dumps({"event": "llm_call", **usage.as_dict()}, ensure_ascii=False, default=str))


_VALIDATORS: dict[str, jsonschema.Draft202012Validator] = {}
_VALIDATORS_BY_ID: dict[int, tuple[dict[str, Any], jsonschema.Draft202012Validator]] = {}


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Validators are costly to build and schemas are few: one per schema per process (looked up
    by identity first, the usual case of one schema object reused, then by content)."""
    hit = _VALIDATORS_BY_ID.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    key = json.dumps(schema, sort_keys=True)
    v = _VALIDATORS.get(key)
    if v is None:
        v = _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    if len(_VALIDATORS_BY_ID) < 4096:
        _VALIDATORS_BY_ID[id(schema)] = (schema, v)
    return v


def _parse(completion: Completion, validator: jsonschema.Draft202012Validator) -> tuple[Any, str | None]:
    if completion.data is not None:
        data = completion.data
    else:
        try:
            data = json.loads(_strip_fences(completion.text))
        except ValueError as exc:
            cut = " (cut off at max_tokens)" if completion.finish_reason == "length" else ""
            return None, f"not JSON{cut}: {exc}"
    if validator.is_valid(data):
        return data, None
    first = min(validator.iter_errors(data), key=lambda e: list(e.path))
    return None, f"{'/'.join(str(p) for p in first.absolute_path) or '(root)'}: {first.message}"


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rsplit("```", 1)[0]
    return t.strip()


def _repaired(request: ProviderRequest, completion: Completion, error: str) -> ProviderRequest:
    """The next attempt: more room if the answer was cut off, otherwise the error fed back (chat)
    and some sampling (a greedy base model would only repeat itself)."""
    from dataclasses import replace

    if completion.finish_reason == "length":
        return replace(request, max_tokens=request.max_tokens * 2)
    messages = request.messages + (
        Message("assistant", completion.text[:2000]), Message("user", REPAIR_INSTRUCTION.format(error=error)),
    )
    return replace(request, messages=messages, temperature=max(request.temperature, 0.7), seed=request.seed + 1)
