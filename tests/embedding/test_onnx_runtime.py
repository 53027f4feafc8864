"""The ONNX runtime: the reference model's vectors, exported once offline, then started without torch.

Real model, real export, real ONNX Runtime; the reference is sentence-transformers itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from spotline.embedding.local import LocalEmbedder, model_path
from spotline.embedding.torch_model import TorchModel
from spotline.embedding.onnx import EXPORT_RECIPE, ensure_onnx, onnx_file
from spotline.settings import EmbeddingSettings
from tests.conftest import ROOT, SAMPLE

pytestmark = pytest.mark.slow


def sample_chunks(res) -> list[str]:
    """The sample help centre cut the way ingestion cuts it (same chunker, same tokenizer)."""
    from spotline.ingestion.parsing import SetAside, parse_document

    texts = []
    for path in sorted(p for p in SAMPLE.rglob("*") if p.is_file()):
        try:
            doc = parse_document(str(path.relative_to(SAMPLE)), path.read_bytes())
        except SetAside:  # the corpus's deliberately broken files
            continue
        texts += [c.embed_text for c in res.chunker.split(doc)]
    return texts


@pytest.fixture
def no_network(monkeypatch):
    """Every outbound connection and name lookup fails, as on a machine with no route out."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_onnx_vectors_match_the_reference_model_on_the_sample_corpus(res):
    texts = sample_chunks(res)
    assert len(texts) > 100, "the comparison needs the whole sample corpus"
    settings = EmbeddingSettings(kind="local", workers=1)
    onnx = LocalEmbedder(settings).embed(texts).vectors
    reference = TorchModel(model_path(settings)).encode(texts, 64)
    cosines = (onnx * reference).sum(axis=1)
    assert onnx.shape == reference.shape and onnx.dtype == np.float32
    assert cosines.min() >= 0.9999, f"worst cosine {cosines.min():.6f}"
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5), "vectors are L2-normalised"


def test_the_export_runs_offline_once_and_the_next_start_never_imports_torch(tmp_path, no_network):
    model_dir = model_path(EmbeddingSettings(kind="local"))
    cache = tmp_path / "onnx"
    path = ensure_onnx(model_dir, cache)  # sockets are blocked: the export must not reach for a hub
    assert path == onnx_file(model_dir, cache) and path.parent.name.endswith(EXPORT_RECIPE)
    info = json.loads((path.parent / "export.json").read_text())
    assert info["min_cosine_vs_sentence_transformers"] >= 0.9999
    before = path.stat()

    # A new process that cannot import torch, transformers or sentence-transformers at all.
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'sentence_transformers', 'onnx'):\n"
        "    sys.modules[name] = None\n"
        "from spotline.embedding.local import LocalEmbedder\n"
        "from spotline.settings import EmbeddingSettings\n"
        f"e = LocalEmbedder(EmbeddingSettings(kind='local', workers=1, onnx_cache_dir={str(cache)!r}))\n"
        "v = e.embed(['How do I get a refund?']).vectors\n"
        "print(v.shape[1], round(float((v * v).sum()), 4))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["384", "1.0"]
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "the export was redone"

    # A cached file damaged after the export (a bad copy into an image) is exported again, once.
    path.write_bytes(path.read_bytes()[: after.st_size // 2])
    embedder = LocalEmbedder(EmbeddingSettings(kind="local", workers=1, onnx_cache_dir=cache))
    vector = embedder.embed(["How do I get a refund?"]).vectors
    assert vector.shape == (1, 384) and abs(float((vector * vector).sum()) - 1.0) < 1e-4
    assert path.stat().st_size == after.st_size, "the damaged file was not replaced by a fresh export"


def test_other_weights_get_their_own_export(tmp_path):
    source = model_path(EmbeddingSettings(kind="local"))
    copy = tmp_path / "model"
    copy.mkdir()
    for item in source.iterdir():  # the same model folder, but one byte of the weights differs
        if item.name != "model.safetensors":
            (copy / item.name).symlink_to(item)
    data = bytearray((source / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (copy / "model.safetensors").write_bytes(bytes(data))
    cache = tmp_path / "onnx"
    assert onnx_file(copy, cache) != onnx_file(source, cache), "the cache key is the weights' hash"
