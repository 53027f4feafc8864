"""Schema-constrained sampling that checks the grammar only where it can change the result.

Why: llama-cpp-python builds its sampler chain as penalties → grammar → greedy (or top-k → ... →
dist), so at every generated token the JSON grammar is matched against every candidate in the
vocabulary: 262,144 for Gemma 3. That made structured output 4× slower than free text here
(README, LLM benchmark).

What the grammar changes is only which candidates survive. After it, greedy decoding keeps one
token (the highest-logit valid one) and top-k sampling keeps k (the k highest-logit valid ones);
every sampler after that sees nothing else. :class:`TopValidSampler` finds exactly those
candidates without matching the whole vocabulary. It takes the N highest logits (numpy's
argpartition, about a millisecond), asks the grammar about those N alone, and if at least k of
them are valid, keeps the first k (greedy asks about the single highest first). Every candidate
outside the N has a logit no higher than every candidate inside, so these are the same k that
grammar-first would keep. If fewer than k are valid, N grows 64-fold, and at the vocabulary's
size it is grammar-first exactly.

Where fewer than k candidates are valid in the whole vocabulary (inside an enum, right after a
key), only a check of the whole vocabulary can say which. That check is made cheaper without
changing its answer (:class:`VocabIndex`): a token can be valid only if its first byte can come
next, so the grammar is first asked about the 256 single-byte tokens, then about the tokens whose
first byte passed (and the end-of-generation and empty-piece tokens, whose verdict does not follow
from a byte). Every other logit is set to -inf, which is what the grammar sampler would have done.

So the candidate list handed to the rest of the chain is the one grammar-first hands it: the same
tokens, the same logits, in the same order. Greedy output is byte-identical. Sampled output
(temperature > 0, top-k > 0) is a draw from the same distribution as grammar-first: softmax over
the top-k *valid* tokens, then top-p, min-p and temperature. It is not the resample-on-rejection
scheme of llama.cpp's command line, which samples from the unconstrained top-k and so changes the
distribution whenever a truncation sampler comes before the check. Given the same seed the draws
are the same too, except when two candidates tie exactly on logit at the cut (then the order
between them, which grammar-first leaves to std::partial_sort, may differ).

Where this does not apply, the provider keeps llama-cpp-python's own chain: no grammar, mirostat,
top-k disabled with temperature > 0 (every valid token would be needed), or custom logits
processors.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

import numpy as np

# How many top candidates to ask the grammar about first, as a multiple of how many must survive
# (and at least this many): in JSON most top candidates are valid, so one round is the rule. Where
# it is not, valid tokens are usually few in the whole vocabulary (inside an enum, right after a
# key), so the next round is large and the one after it is the whole vocabulary.
FIRST_ROUND = 32
GROWTH = 64


class VocabIndex:
    """Per model: the first byte of every token's piece (as the grammar sees it: special tokens
    rendered), which token is the single byte b, and the tokens always asked about whole."""

    def __init__(self, vocab: Any):
        import llama_cpp

        n = llama_cpp.llama_vocab_n_tokens(vocab)
        self.first_byte = np.full(n, -1, dtype=np.int16)  # -1: always ask the grammar about it
        self.byte_token = np.full(256, -1, dtype=np.int64)
        buf = ctypes.create_string_buffer(64)
        for token in range(n):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                continue  # valid exactly when the grammar is complete: no byte says that
            size = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
            if size <= 0:
                continue  # empty (or longer than the buffer): asked about whole
            first = buf.raw[0]
            self.first_byte[token] = first
            if size == 1 and llama_cpp.llama_vocab_get_attr(vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_BYTE:
                self.byte_token[first] = token
        self.always = np.flatnonzero(self.first_byte < 0)


class TopValidSampler:
    """A llama.cpp sampler (``llama_sampler`` via ctypes) that keeps the ``keep`` highest-logit
    candidates the grammar accepts, and advances the grammar with every accepted token."""

    def __init__(self, vocab: Any, grammar: Any, keep: int, index: "Callable[[], VocabIndex] | None" = None):
        import llama_cpp

        self._ll = llama_cpp
        self.keep = keep
        self.index = index  # built when first needed: most calls never check the whole vocabulary
        self.rounds = 0  # grammar checks made, for tests and the benchmark
        self.full_rounds = 0  # of which over the whole vocabulary
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self._grammar:
            raise ValueError("llama.cpp could not build the grammar sampler")
        self._buf = None
        self._buf_len = 0
        iface = llama_cpp.llama_sampler_i()
        # The callbacks are kept on self: ctypes would otherwise free them while llama.cpp holds them.
        self._callbacks = (
            llama_cpp.llama_sampler_i_accept(lambda _s, token: self._accept(token)),
            llama_cpp.llama_sampler_i_apply(lambda _s, cur_p: self._apply(cur_p)),
            llama_cpp.llama_sampler_i_reset(lambda _s: llama_cpp.llama_sampler_reset(self._grammar)),
        )
        iface.accept, iface.apply, iface.reset = self._callbacks
        # No name, as llama-cpp-python's own Python samplers: a C string returned from a ctypes
        # callback would not outlive the call.
        iface.name = llama_cpp.llama_sampler_i_name(0)
        iface.clone = llama_cpp.llama_sampler_i_clone(0)
        iface.free = llama_cpp.llama_sampler_i_free(0)  # the chain never frees us; close() frees the grammar
        self._iface = iface
        self.sampler = llama_cpp.llama_sampler()
        self.sampler.iface = ctypes.pointer(iface)
        self.sampler.ctx = None

    def pointer(self):
        return ctypes.pointer(self.sampler)

    def close(self) -> None:
        if self._grammar:
            self._ll.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self):
        self.close()

    # ------------------------------------------------------------------ llama.cpp callbacks
    # An exception cannot cross back into C: a failure here would be printed and ignored, and the
    # chain would go on with the candidates unfiltered. So apply falls back to the full grammar
    # rather than raise; accept is a single call into llama.cpp.

    def _accept(self, token: int) -> None:
        self._ll.llama_sampler_accept(self._grammar, token)

    def _apply(self, cur_p) -> None:
        arr = cur_p.contents
        n = int(arr.size)
        try:
            self._keep_top_valid(arr, n)
        except Exception:  # noqa: BLE001 - see above: never leave the chain unconstrained
            self.full_rounds += 1
            self._ll.llama_sampler_apply(self._grammar, cur_p)

    def _keep_top_valid(self, arr, n: int) -> None:
        ll = self._ll
        data = np.ctypeslib.as_array(arr.data, shape=(n,))  # a view: id, logit, p
        logits = data["logit"]
        want = self.keep
        if want == 1:  # greedy: most of the time the argmax itself is valid
            best = int(np.argmax(logits))  # the first maximum, as llama.cpp's greedy sampler takes it
            self.rounds += 1
            if np.isfinite(self._check(data[best:best + 1].copy())["logit"][0]):
                data[0] = data[best]
                arr.size, arr.sorted, arr.selected = 1, True, -1
                return
        size = max(FIRST_ROUND, want * 4)
        while size < n:
            self.rounds += 1
            top = np.argpartition(-logits, size)[:size]
            # Highest logit first; among equal logits the lower token id first, which is the one
            # greedy decoding picks from the full list (it keeps the first maximum it meets).
            top = top[np.lexsort((data["id"][top], -logits[top]))]
            picked = data[top].copy()
            checked = self._check(picked)
            valid = np.flatnonzero(np.isfinite(checked["logit"]))
            if len(valid) >= want:
                data[:want] = picked[valid[:want]]
                arr.size, arr.sorted, arr.selected = want, True, -1
                return
            size *= GROWTH
        self.rounds += 1
        self.full_rounds += 1
        if self.index is None:
            ll.llama_sampler_apply(self._grammar, ctypes.pointer(arr))
            return
        self._whole_vocabulary(data, logits)

    def _whole_vocabulary(self, data: np.ndarray, logits: np.ndarray) -> None:
        """The grammar's verdict on every candidate, as its own apply would leave it (rejected
        logits -inf, nothing else touched), asking it only about tokens whose first byte can come next."""
        index = self.index()
        have = index.byte_token >= 0
        probe = np.zeros(int(have.sum()), dtype=data.dtype)
        probe["id"] = index.byte_token[have]
        allowed = np.ones(256, dtype=bool)  # a byte with no token of its own is never ruled out
        allowed[have] = np.isfinite(self._check(probe)["logit"])
        first = index.first_byte[data["id"]]
        ask = np.flatnonzero((first < 0) | allowed[np.maximum(first, 0)])
        verdict = np.isfinite(self._check(data[ask].copy())["logit"])
        valid = ask[verdict]
        kept = logits[valid].copy()
        logits[:] = -np.inf
        logits[valid] = kept

    def _check(self, candidates: np.ndarray) -> np.ndarray:
        """The grammar's verdict on a few candidates: rejected ones come back with logit -inf."""
        ll = self._ll
        n = len(candidates)
        if self._buf_len < n:
            self._buf = (ll.llama_token_data * n)()
            self._buf_len = n
        view = np.ctypeslib.as_array(self._buf, shape=(self._buf_len,))[:n]
        view[:] = candidates
        small = ll.llama_token_data_array(data=self._buf, size=n, selected=-1, sorted=False)
        ll.llama_sampler_apply(self._grammar, ctypes.byref(small))
        return view


def chain_with_top_valid(llama: Any, grammar: Any, build_unconstrained, temp: float, top_k: int,
                         mirostat_mode: int, logits_processor: Any) -> tuple[Any, TopValidSampler] | None:
    """The sampler chain llama-cpp-python would build, with :class:`TopValidSampler` where its
    grammar sampler would be; None where that would not be exact (the caller keeps the original).

    ``build_unconstrained()`` returns llama-cpp-python's own chain without the grammar
    (penalties → greedy, or penalties → top-k → typical → top-p → min-p → temp → dist); the
    sampler goes in right after the penalties, where llama-cpp-python puts the grammar.
    """
    import llama_cpp

    if mirostat_mode != 0 or logits_processor is not None or temp < 0 or (temp > 0 and top_k <= 0):
        return None
    keep = 1 if temp == 0 else top_k
    chain = build_unconstrained()
    n = llama_cpp.llama_sampler_chain_n(chain.sampler)
    # Take off everything after the penalties sampler (index 0), add ours, put them back in order.
    rest = [llama_cpp.llama_sampler_chain_remove(chain.sampler, 1) for _ in range(n - 1)]
    top_valid = TopValidSampler(llama._model.vocab, grammar, keep, index=lambda: vocab_index(llama))
    llama_cpp.llama_sampler_chain_add(chain.sampler, top_valid.pointer())
    # Removed before the chain is freed, as llama-cpp-python does for its own Python samplers.
    chain.custom_samplers.append((1, top_valid))
    for sampler in rest:
        llama_cpp.llama_sampler_chain_add(chain.sampler, sampler)
    return chain, top_valid


def vocab_index(llama: Any) -> VocabIndex:
    """The model's :class:`VocabIndex`, built on first use (about a second for 262k tokens)."""
    index = getattr(llama, "_spotline_vocab_index", None)
    if index is None:
        index = VocabIndex(llama._model.vocab)
        llama._spotline_vocab_index = index
    return index
