"""The model plumbing of fine-tuning: Gemma 3 270M from the shipped GGUF into transformers, and a
peft LoRA trained there back out as a GGUF LoRA that llama.cpp serves.

Fast tests use the tiny randomly initialised Gemma3 (same class and code path) written as a float32
GGUF, so llama.cpp's output can be compared with peft's to the logit. Slow tests use the real model.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from spotline.finetune import base_model
from spotline.finetune.base_model import convert_once, load_converted, tiny_config, tiny_config_model
from spotline.finetune.gguf_lora import UnsupportedAdapter, export_gguf_lora, read_gguf_header, write_f32_gguf
from spotline.settings import StoreSettings
from spotline.storage import make_store
from spotline.storage.layout import Layout

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def llama(model_path: Path, lora_path: Path | None = None, n_ctx: int = 256, logits_all: bool = False):
    from llama_cpp import Llama

    return Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None, n_ctx=n_ctx,
                 n_threads=2, n_threads_batch=2, seed=0, logits_all=logits_all, verbose=False)


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def with_lora(model, seed: int = 1, r: int = 4, lora_alpha: int = 8, **config):
    """A peft LoRA on a copy of ``model`` with random (not zero) B, so that it changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=r, lora_alpha=lora_alpha, target_modules=TARGETS, init_lora_weights=False, **config))
    peft_model.eval()
    return peft_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tokenizer = tiny_config_model(seed=0)
    base = write_f32_gguf(model, tokenizer, tmp_path_factory.mktemp("tiny") / "tiny-base.gguf")
    return model, tokenizer, base


# --- fast: the tiny model ---------------------------------------------------------------------------

def test_the_tiny_model_is_the_same_for_the_same_seed_and_differs_for_another():
    torch.manual_seed(123)  # the global RNG state does not matter
    a, tokenizer = tiny_config_model(seed=7)
    torch.manual_seed(456)
    b, _ = tiny_config_model(seed=7)
    c, _ = tiny_config_model(seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert type(a).__name__ == "Gemma3ForCausalLM" and a.config.num_hidden_layers == 2
    text = "naïve café 🙂\n  two spaces"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_an_exported_adapter_holds_each_lora_pair_under_its_base_tensor_name(tiny, tmp_path):
    import gguf

    model, _, base = tiny
    peft_model = with_lora(model, r=4, lora_alpha=8)
    out = export_gguf_lora(peft_model, tmp_path / "adapter.gguf", base)

    reader = gguf.GGUFReader(str(out))
    assert reader.get_field("general.architecture").contents() == "gemma3"
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == 8.0
    tensors = {t.name: t for t in reader.tensors}
    expected = {f"blk.{i}.{GGUF_NAMES[m]}.weight.lora_{ab}" for i in range(2) for m in TARGETS for ab in "ab"}
    assert set(tensors) == expected

    _, base_dims = read_gguf_header(base)
    modules = dict(peft_model.named_modules())
    for i in range(2):
        for m in TARGETS:
            part = "self_attn" if m.endswith("_proj") and m[0] in "qkvo" else "mlp"
            layer = modules[f"base_model.model.model.layers.{i}.{part}.{m}"]
            lora_a, lora_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            name = f"blk.{i}.{GGUF_NAMES[m]}.weight"
            a, b = tensors[name + ".lora_a"], tensors[name + ".lora_b"]
            # GGUF dims are torch's reversed: a is (r, in) in torch, [in, r] in GGUF; b (out, r) / [r, out]
            assert tuple(a.shape) == (lora_a.shape[1], 4) and tuple(b.shape) == (4, lora_b.shape[0])
            assert base_dims[name] == (a.shape[0], b.shape[1])  # llama-adapter.cpp's shape check
            assert a.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(np.asarray(a.data).reshape(lora_a.shape), lora_a.detach().numpy())
            np.testing.assert_array_equal(np.asarray(b.data).reshape(lora_b.shape), lora_b.detach().numpy())


@pytest.mark.parametrize("variant", [
    {},
    {"use_rslora": True},  # peft scales by alpha/sqrt(r), llama.cpp by alpha/r: folded into lora_b
    {"alpha_pattern": {"down_proj": 2}, "rank_pattern": {"q_proj": 2}},
], ids=["plain", "rslora", "per-module-alpha-and-rank"])
def test_llama_cpp_applies_an_exported_adapter_as_peft_does(tiny, tmp_path, variant):
    model, tokenizer, base = tiny
    text = "The tiny model reads bytes: naïve 🙂\nand newlines."
    ids = tokenizer(text)["input_ids"]
    plain = llama(base, logits_all=True)
    assert plain.tokenize(text.encode(), add_bos=True, special=True) == ids  # same tokenizer both sides
    base_hf, base_ll = hf_logits(model, ids), llama_logits(plain, ids)
    assert np.abs(base_hf - base_ll).max() < 5e-3  # the f32 base: same model (f16 KV cache in llama.cpp)

    peft_model = with_lora(model, **variant)
    adapter = export_gguf_lora(peft_model, tmp_path / "adapter.gguf", base)
    tuned_hf, tuned_ll = hf_logits(peft_model, ids), llama_logits(llama(base, adapter, logits_all=True), ids)
    effect = np.abs(tuned_hf - base_hf).max()
    assert effect > 0.3  # the adapter moves the logits a lot...
    assert np.abs(tuned_hf - tuned_ll).max() < 0.02 * effect  # ...and llama.cpp moves them the same way


def test_an_adapter_folder_exports_the_same_file_as_the_model_in_memory(tiny, tmp_path):
    model, _, base = tiny
    peft_model = with_lora(model, use_rslora=True)
    peft_model.save_pretrained(tmp_path / "adapter")
    from_memory = export_gguf_lora(peft_model, tmp_path / "memory.gguf", base)
    from_folder = export_gguf_lora(tmp_path / "adapter", tmp_path / "folder.gguf", base)
    assert from_memory.read_bytes() == from_folder.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_adapters_llama_cpp_would_apply_wrongly_or_refuse_are_refused_here(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM

    model, tokenizer, base = tiny
    with pytest.raises(UnsupportedAdapter, match="DoRA"):
        export_gguf_lora(with_lora(model, use_dora=True), tmp_path / "a.gguf", base)
    embedding = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["embed_tokens"]))
    with pytest.raises(UnsupportedAdapter, match="embedding"):
        export_gguf_lora(embedding, tmp_path / "b.gguf", base)
    with pytest.raises(UnsupportedAdapter, match="modules_to_save"):
        export_gguf_lora(with_lora(model, modules_to_save=["lm_head"]), tmp_path / "c.gguf", base)

    other_config = tiny_config(len(tokenizer))
    other_config.intermediate_size = 96
    other = write_f32_gguf(Gemma3ForCausalLM(other_config), tokenizer, tmp_path / "other-base.gguf")
    with pytest.raises(UnsupportedAdapter, match="blk.0.ffn_down.weight: base is 96 in x 64 out"):
        export_gguf_lora(with_lora(model), tmp_path / "d.gguf", other)
    assert not list(tmp_path.glob("[abcd].gguf"))


class DiesBeforeTheManifest:
    """A store whose process is killed after uploading the files, before the manifest."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put(self, key, data, content_type=None):
        if key.endswith("/manifest.json"):
            raise KeyboardInterrupt("killed")
        return self.inner.put(key, data, content_type)


def test_the_base_model_is_converted_once_and_an_unfinished_upload_is_never_used(tiny, tmp_path, monkeypatch):
    model, tokenizer, gguf_file = tiny
    conversions = []

    def fake_load(path):  # the real one de-quantizes 270M parameters for a minute; the caching is what is tested
        conversions.append(path)
        return copy.deepcopy(model), tokenizer

    monkeypatch.setattr(base_model, "load_base_from_gguf", fake_load)
    store = make_store(StoreSettings(kind="local", root=tmp_path / "store"))
    prefix = Layout().models + "base"
    digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    stored = f"{prefix}/{digest}-{base_model.CONVERSION}/"

    with pytest.raises(KeyboardInterrupt):
        convert_once(DiesBeforeTheManifest(store), prefix, gguf_file, tmp_path / "work-1")
    assert {o.key for o in store.list(stored)} >= {stored + "model.safetensors", stored + "config.json"}
    assert store.head(stored + "manifest.json") is None
    assert not [p for p in (tmp_path / "work-1").iterdir()]  # nothing half-made left locally either

    folder = convert_once(store, prefix, gguf_file, tmp_path / "work-1")  # the files without a manifest are not used
    assert len(conversions) == 2 and store.head(stored + "manifest.json") is not None
    assert convert_once(store, prefix, gguf_file, tmp_path / "work-1") == folder  # the local copy verifies
    other = convert_once(store, prefix, gguf_file, tmp_path / "work-2")  # another machine: downloaded
    assert len(conversions) == 2
    names = {p.name for p in other.iterdir()}
    assert names == {p.name for p in folder.iterdir()} >= {"model.safetensors", "tokenizer.json", "manifest.json"}

    store.put(stored + "model.safetensors", b"not the weights")  # a stored file that is not what the manifest says
    convert_once(store, prefix, gguf_file, tmp_path / "work-3")
    assert len(conversions) == 3

    (other / "config.json").write_text("{}")  # a local copy that no longer verifies is replaced
    assert convert_once(store, prefix, gguf_file, tmp_path / "work-2") == other and len(conversions) == 3
    loaded, loaded_tokenizer = load_converted(other)
    ids = tokenizer("hello")["input_ids"]
    assert loaded_tokenizer("hello")["input_ids"] == ids
    np.testing.assert_array_equal(hf_logits(loaded, ids), hf_logits(model, ids))


# --- slow: the real Gemma 3 270M --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The shipped GGUF, converted once for this module (~1 min) through the object store."""
    from spotline.llm.providers.local import default_gguf

    home = tmp_path_factory.mktemp("ft-home")
    gguf_file = default_gguf(home)
    store = make_store(StoreSettings(kind="local", root=home / "store"))
    folder = convert_once(store, Layout().models + "base", gguf_file, home / "work")
    model, tokenizer = load_converted(folder)
    return {"home": home, "gguf": gguf_file, "folder": folder, "model": model, "tokenizer": tokenizer}


def hf_greedy(model, tokenizer, prompt: str, n: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def llama_greedy(llm, prompt: str, n: int) -> list[int]:
    llm.reset()
    out = []
    for token in llm.generate(llm.tokenize(prompt.encode(), add_bos=True, special=True), temp=0.0, top_k=1):
        out.append(token)
        if len(out) == n or token == llm.token_eos():
            break
    return out


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.mark.slow
def test_transformers_reads_the_shipped_gguf_with_llama_cpps_tokens_and_continuations(real):
    """Token ids agree exactly. Greedy continuations agree for the first tokens and may then part
    at a near-tie, because llama.cpp rounds activations to 8 bits in its quantized matmuls
    (measured, 16 tokens: 16, 15 and 16 on these prompts; on "Once upon a time" they part at the
    4th token, where transformers' top two logits are 0.06 apart)."""
    model, tokenizer = real["model"], real["tokenizer"]
    llm = llama(real["gguf"])
    for text in ["Project boards are useful because", "  two spaces\nnewline\ttab", "naïve café — 日本語 🙂",
                 "x = [1, 2, 3]; print(x)  # comment", "<start_of_turn>user\nhi<end_of_turn>\n", "Ünïcödé ß ﬁ"]:
        assert tokenizer(text)["input_ids"] == llm.tokenize(text.encode(), add_bos=True, special=True), text
    for prompt in ["Project boards are useful because", "The capital of France is", "def fibonacci(n):"]:
        assert agreeing_prefix(hf_greedy(model, tokenizer, prompt, 16), llama_greedy(llm, prompt, 16)) >= 8, prompt


@pytest.mark.slow
def test_the_conversion_is_exact_where_llama_cpp_does_not_quantize(real, tmp_path):
    """The converted weights written back as an f32 GGUF give transformers' logits in llama.cpp (to
    its f16 KV cache): what separates transformers from the served Q4_K_M model is llama.cpp's
    arithmetic on quantized blocks, not the conversion."""
    model, tokenizer = real["model"], real["tokenizer"]
    f32 = write_f32_gguf(model, tokenizer, tmp_path / "f32.gguf")
    ids = tokenizer("Question: How do I archive a board?\nAnswer: Open the board menu and choose Archive.")["input_ids"]
    reference = hf_logits(model, ids)
    exact = np.abs(llama_logits(llama(f32, logits_all=True), ids) - reference)
    served = np.abs(llama_logits(llama(real["gguf"], logits_all=True), ids) - reference)
    assert exact.max() < 0.1  # measured 0.023 (logits spread ~5)
    assert served.mean() > 5 * exact.mean()  # measured 0.19 vs 0.0027


@pytest.mark.slow
def test_a_lora_trained_in_transformers_is_served_by_llama_cpp_as_transformers_predicts(real, tmp_path):
    """A few steps of LoRA (r=8, every projection) on two prompt -> completion pairs, until the
    transformers model continues both prompts with their completions; exported, then served by
    Spotline's llama.cpp provider on the Q4_K_M base. Measured: 5 AdamW steps; the served greedy
    text equals transformers' over all 16 tokens (or to end of sequence) on both prompts (and, in
    development, on two untrained prompts: 15/15 and 16/16 tokens), so no tolerance is needed here:
    a trained LoRA's margins are far wider than llama.cpp's rounding."""
    from peft import LoraConfig, get_peft_model

    from spotline.llm.providers.local import LlamaCppProvider
    from spotline.llm.types import ProviderRequest
    from spotline.settings import ModelSpec

    model, tokenizer = real["model"], real["tokenizer"]
    pairs = [("Question: What is the Larkspur support code?\nAnswer:",
              " The support code is ZEBRA-42, printed on every invoice."),
             ("Question: Who answers the Larkspur help line?\nAnswer:",
              " Marigold the owl answers it from noon to midnight.")]
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model),
                                LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS))
    batch = []
    for prompt, completion in pairs:
        p = tokenizer(prompt)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        batch.append((torch.tensor([p + c]), torch.tensor([[-100] * len(p) + c]), c))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3,
                                  weight_decay=0.0)

    def learned() -> bool:
        peft_model.eval()
        done = all(hf_greedy(peft_model, tokenizer, prompt, 8) == c[:8]
                   for (prompt, _), (_, _, c) in zip(pairs, batch))
        peft_model.train()
        return done

    steps = 0
    peft_model.train()
    while steps < 30 and not (steps and steps % 5 == 0 and learned()):
        for ids, labels, _ in batch:
            peft_model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
    peft_model.eval()
    assert learned(), f"the LoRA did not learn the completions in {steps} steps"

    adapter = export_gguf_lora(peft_model, tmp_path / "adapter.gguf", real["gguf"])
    provider = LlamaCppProvider(real["home"], threads=2)
    base_spec = ModelSpec(provider="local", model_id="gemma-3-270m-q4_k_m", gguf=real["gguf"], context_tokens=512)
    tuned_spec = ModelSpec(provider="local", model_id="gemma-3-270m-ft", gguf=real["gguf"], lora=adapter,
                           context_tokens=512)

    def served(spec, prompt):
        request = ProviderRequest(messages=(), text=prompt, schema=None, max_tokens=16, temperature=0.0)
        return provider.complete(spec, request).text

    for prompt, completion in pairs:
        expected = tokenizer.decode(hf_greedy(peft_model, tokenizer, prompt, 16), skip_special_tokens=True)
        assert expected.startswith(completion[:20])
        tuned = served(tuned_spec, prompt)
        assert tuned != served(base_spec, prompt)  # (a) the adapter changes what llama.cpp serves
        assert tuned == expected  # (b) into what transformers + peft predicts
