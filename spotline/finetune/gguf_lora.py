"""A peft LoRA adapter (trained on the transformers Gemma3) as a GGUF LoRA adapter that llama.cpp
loads with ``Llama(model_path=base, lora_path=adapter)``.

Why not llama.cpp's ``convert_lora_to_gguf.py``: it is not on PyPI (it lives in the llama.cpp
repository beside ``convert_hf_to_gguf.py``, which it imports) and it wants the base model's HF
config folder. What it writes for a plain LoRA is small, and this module writes the same with
ggml's own ``gguf`` package:

- metadata: ``general.architecture`` (the base's, "gemma3"), ``general.type = "adapter"``,
  ``adapter.type = "lora"``, ``adapter.lora.alpha`` (float32, peft's ``lora_alpha``);
- per adapted weight, two float32 tensors named after the base tensor (``gguf.get_tensor_name_map``):
  ``blk.0.attn_q.weight.lora_a`` = peft's ``lora_A.weight``, torch shape (r, in), and
  ``blk.0.attn_q.weight.lora_b`` = ``lora_B.weight``, torch shape (out, r). GGUF stores dims
  reversed, so llama.cpp sees a: [in, r] and b: [r, out], which is what llama-adapter.cpp checks
  (``model.ne[0] == a.ne[0]``, ``model.ne[1] == b.ne[1]``, ``a.ne[1] == b.ne[0]``).

llama.cpp computes ``W x + (alpha / r) * B (A x)`` with r read from each lora_b, as peft does with
``scaling = lora_alpha / r``. Where peft scales otherwise (rsLoRA: alpha / sqrt(r); a per-module
``alpha_pattern``) the difference is folded into lora_b, so the file means what the adapter did.

Gemma specifics checked: the converter's Gemma change (norm weights stored ``+1``) touches norms
only, and norms are never LoRA'd here; Gemma3's q/k weights are not permuted (NEOX rope on both
sides: transformers reads the GGUF's q/k unchanged and reproduces llama.cpp's output), embedding
scaling and the q scaling act on activations, not on the adapted weights. So a q/k/v/o/gate/up/down
LoRA goes across unchanged. Refused, rather than written wrong: DoRA, LoRA biases,
``modules_to_save``, ``fan_in_fan_out``, embedding/lm_head adapters (Gemma ties them; llama.cpp's
converter refuses lm_head too), and any tensor that is not a lora_A/lora_B pair.

:func:`write_f32_gguf` writes a transformers Gemma3 as a float32 GGUF llama.cpp loads: a tiny one
(base_model.tiny_config_model) lets a fast test check an exported adapter numerically in llama.cpp,
the real de-quantized one checks the conversion without llama.cpp's quantized matmuls in the way.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from spotline.errors import PermanentError

ADAPTER_NAME = "default"


class UnsupportedAdapter(PermanentError, ValueError):
    """The adapter uses something a GGUF LoRA cannot express (or this exporter does not write)."""


def _load_adapter(adapter: Any, adapter_name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, float] | None]:
    """(state dict of tensors, adapter config as a dict, peft's own per-module scaling or None)."""
    import torch

    if isinstance(adapter, (str, os.PathLike)):
        folder = Path(adapter)
        config = json.loads((folder / "adapter_config.json").read_text())
        if (folder / "adapter_model.safetensors").is_file():
            from safetensors.torch import load_file

            state = load_file(str(folder / "adapter_model.safetensors"), device="cpu")
        else:
            state = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
        return state, config, None

    from peft import get_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    config = adapter.peft_config[adapter_name].to_dict()
    state = get_peft_model_state_dict(adapter, adapter_name=adapter_name)
    scaling = {}
    for name, module in adapter.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.scaling:
            scaling[_module_name(name)] = float(module.scaling[adapter_name])
    return state, config, scaling


def _module_name(key: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj[.lora_A.weight]`` -> ``model.layers.0.self_attn.q_proj``."""
    key = re.sub(r"\.lora_[AB](\.[^.]+)?\.weight$", "", key)
    key = key.removeprefix("base_model.model.")
    for lm_prefix, replace in (("model.language_model.", "model."), ("language_model.", "")):
        if key.startswith(lm_prefix):
            return replace + key[len(lm_prefix):]
    return key


def _check_config(config: dict[str, Any]) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedAdapter(f"not a LoRA adapter: {config.get('peft_type')}")
    if config.get("use_dora"):
        raise UnsupportedAdapter("DoRA adapters have magnitude vectors llama.cpp does not apply")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise UnsupportedAdapter("LoRA with trained biases is not supported")
    if config.get("modules_to_save"):
        raise UnsupportedAdapter(f"modules_to_save ({config['modules_to_save']}) are full weights, not a LoRA")
    if config.get("fan_in_fan_out"):
        raise UnsupportedAdapter("fan_in_fan_out (Conv1D) adapters are not supported")


def _peft_scaling(module: str, r: int, config: dict[str, Any]) -> float:
    from peft.utils.other import get_pattern_key

    alpha_pattern = config.get("alpha_pattern") or {}
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), config["lora_alpha"])
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """(metadata, {tensor name: GGUF dims}) of a GGUF file, without its tensor data.

    ``gguf.GGUFReader`` parses every element of every array field: 8 s for the 262k-token
    vocabulary of Gemma 3. Here arrays are skipped and reported as their length (~0.3 s).
    """
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        pos = 4

        def take(fmt: str) -> Any:
            nonlocal pos
            (value,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return value

        def string() -> str:
            nonlocal pos
            n = take("<Q")
            pos += n
            return bytes(buf[pos - n:pos]).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            nonlocal pos
            if kind == 8:
                return string()
            if kind == 9:
                elem, n = take("<I"), take("<Q")
                if elem == 8:
                    for _ in range(n):
                        length = take("<Q")  # not `pos += take(...)`: that adds to pos as it was before take
                        pos += length
                elif elem in _SCALAR:
                    pos += n * struct.calcsize(_SCALAR[elem])
                else:
                    raise ValueError(f"{path}: nested GGUF arrays are not supported")
                return n
            return take(_SCALAR[kind])

        version = take("<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        n_tensors, n_kv = take("<Q"), take("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = string()
            metadata[key] = value(take("<I"))
        tensors = {}
        for _ in range(n_tensors):
            name = string()
            dims = tuple(take("<Q") for _ in range(take("<I")))
            pos += 4 + 8  # ggml type, data offset
            tensors[name] = dims
    return metadata, tensors


def _base_tensors(base_gguf_path: Path) -> tuple[str, int, dict[str, tuple[int, ...]]]:
    """(architecture, block count, {tensor name: GGUF dims}) of a base model file."""
    metadata, tensors = read_gguf_header(base_gguf_path)
    arch = metadata["general.architecture"]
    return arch, int(metadata[f"{arch}.block_count"]), tensors


def export_gguf_lora(adapter: Any, out_path: Path, base_gguf_path: Path | None = None, *,
                     adapter_name: str = ADAPTER_NAME, name: str | None = None) -> Path:
    """Write ``adapter`` (a peft adapter folder, or a PeftModel in memory) as a GGUF LoRA at ``out_path``.

    With ``base_gguf_path`` (the GGUF it will be served on) the architecture comes from it and every
    adapted tensor is checked against it first, so a mismatch fails here and not in llama.cpp. The
    file appears complete or not at all. Returns ``out_path``.
    """
    import gguf
    import torch

    state, config, live_scaling = _load_adapter(adapter, adapter_name)
    _check_config(config)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        m = re.search(r"\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
        if m is None:
            if "lora_embedding" in key:
                raise UnsupportedAdapter(f"{key}: embedding LoRA is not supported (Gemma ties embeddings and output)")
            raise UnsupportedAdapter(f"{key}: not a lora_A/lora_B weight")
        pairs.setdefault(_module_name(key), {})[m.group(1)] = tensor
    if not pairs:
        raise UnsupportedAdapter("the adapter has no LoRA weights")

    arch, blocks, base = "gemma3", None, None
    if base_gguf_path is not None:
        arch, blocks, base = _base_tensors(Path(base_gguf_path))
    layers = [int(m.group(1)) for k in pairs if (m := re.search(r"\.layers\.(\d+)\.", k))]
    if blocks is None:
        blocks = max(layers, default=0) + 1
    elif layers and max(layers) >= blocks:
        raise UnsupportedAdapter(f"the adapter has layer {max(layers)}; the base model has {blocks} blocks")
    arch_id = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), None)
    if arch_id is None:
        raise UnsupportedAdapter(f"gguf {gguf.__version__} does not know the architecture {arch!r}")
    names = gguf.get_tensor_name_map(arch_id, blocks)

    alpha = float(config["lora_alpha"])
    tensors: list[tuple[str, np.ndarray]] = []
    for module in sorted(pairs, key=_natural):
        ab = pairs[module]
        if set(ab) != {"A", "B"}:
            raise UnsupportedAdapter(f"{module}: lora_A and lora_B must both be present")
        a, b = ab["A"].detach().to(torch.float32).cpu(), ab["B"].detach().to(torch.float32).cpu()
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise UnsupportedAdapter(f"{module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                                     "are not a Linear LoRA")
        target = names.get_name(module)
        if target is None:
            raise UnsupportedAdapter(f"{module}: no {arch} tensor of that name (only q/k/v/o and MLP projections)")
        if target in ("token_embd", "output"):
            raise UnsupportedAdapter(f"{module}: LoRA on {target} is not supported (tied embeddings)")
        target += ".weight"
        rank = a.shape[0]
        if base is not None:
            want = base.get(target)
            if want is None:
                raise UnsupportedAdapter(f"{target} is not in the base model")
            if want != (a.shape[1], b.shape[0]):  # GGUF dims: (in, out)
                raise UnsupportedAdapter(f"{target}: base is {want[0]} in x {want[1]} out, "
                                         f"the adapter {a.shape[1]} in x {b.shape[0]} out")
        scale = _peft_scaling(module, rank, config)
        live = (live_scaling or {}).get(module)
        if live is not None and not math.isclose(live, scale, rel_tol=1e-6):
            raise UnsupportedAdapter(f"{module}: peft scales by {live}, the config says {scale}")
        llama_scale = alpha / rank if alpha else 1.0  # llama-adapter.h: alpha ? alpha / rank : 1
        if not math.isclose(scale, llama_scale, rel_tol=1e-7):
            b = b * (scale / llama_scale)
        tensors.append((target + ".lora_a", np.ascontiguousarray(a.numpy())))
        tensors.append((target + ".lora_b", np.ascontiguousarray(b.numpy())))

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        if name:
            writer.add_name(name)
        for tensor_name, data in tensors:
            writer.add_tensor(tensor_name, data)
        _commit(writer, tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _commit(writer: Any, tmp: Path, out_path: Path) -> None:
    """Write the GGUF to its temporary name, then rename: the file appears complete or not at all."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out_path)


def _natural(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def write_f32_gguf(model: Any, tokenizer: Any, out_path: Path) -> Path:
    """A transformers Gemma3ForCausalLM as a float32 GGUF llama.cpp loads: for checks, not serving.

    Mirrors convert_hf_to_gguf for Gemma3: norm weights ``+1``, no ``output.weight`` when tied,
    llama.cpp's hyperparameter keys, the per-layer sliding pattern. The vocabulary is written as a
    sentencepiece ("llama") one with zero scores and no merges: llama.cpp then tokenizes exactly as
    :func:`~spotline.finetune.base_model.tiny_tokenizer` does. With a real vocabulary (Gemma's 262k)
    llama.cpp's text tokenization would differ, so feed it token ids (``Llama.eval``).
    """
    import gguf
    import torch

    cfg = model.config
    arch = "gemma3"
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg.num_hidden_layers)
    rope = cfg.rope_parameters
    tmp = Path(out_path).with_name(f".{Path(out_path).name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("gemma3 f32 (check)")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(rope["full_attention"]["rope_theta"])
    writer.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
    writer.add_sliding_window(cfg.sliding_window)
    writer.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    if cfg.query_pre_attn_scalar != cfg.head_dim:  # llama.cpp scales q by 1/sqrt(head_dim) (27B aside)
        raise ValueError("llama.cpp assumes query_pre_attn_scalar == head_dim")

    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    types = []
    for i, tok in enumerate(tokens):
        if i == tokenizer.unk_token_id:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in special:
            types.append(gguf.TokenType.CONTROL)
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", tok):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)

    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        stem, suffix = key.rsplit(".", 1)
        target = names.get_name(stem)
        if target is None:
            raise ValueError(f"{key}: no gemma3 tensor of that name")
        data = tensor.detach().to(torch.float32).cpu()
        if key.endswith("norm.weight"):
            data = data + 1.0
        writer.add_tensor(f"{target}.{suffix}", np.ascontiguousarray(data.numpy()))
    try:
        _commit(writer, tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(out_path)


__all__ = ["UnsupportedAdapter", "export_gguf_lora", "read_gguf_header", "write_f32_gguf"]
