"""Embedding cache in the object store, keyed by model id + chunk hash.

Sharded one object per source document: a changed document costs one GET and one PUT, not one
request per chunk (on S3, a PUT per chunk would cost more than Titan charges to embed it). The
shard is rewritten to hold exactly the document's current chunks, so it never grows with edits.
"""

from __future__ import annotations

import io
import logging
import re

import numpy as np

from spotline.hashing import sha256_hex
from spotline.storage.base import ObjectNotFound, ObjectStore
from spotline.storage.layout import Layout

log = logging.getLogger(__name__)


class EmbeddingCache:
    def __init__(self, store: ObjectStore, model_id: str, prefix: str = Layout().embedding_cache):
        self.store = store
        self.model_id = model_id
        self.prefix = f"{prefix}{re.sub(r'[^A-Za-z0-9._-]+', '_', model_id)}/"

    def key(self, source_uri: str) -> str:
        h = sha256_hex(source_uri)
        return f"{self.prefix}{h[:2]}/{h}.npz"

    def load(self, source_uri: str) -> dict[str, np.ndarray]:
        try:
            data = self.store.get(self.key(source_uri))
        except ObjectNotFound:
            return {}
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                if str(npz["model"]) != self.model_id:
                    return {}
                return dict(zip(npz["hashes"].tolist(), npz["vectors"]))
        except Exception as exc:  # a damaged shard only costs re-embedding that document
            log.warning("ignoring unreadable embedding cache shard for %s: %s", source_uri, exc)
            return {}

    def save(self, source_uri: str, vectors: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        hashes = list(vectors)
        matrix = np.stack([vectors[h] for h in hashes]).astype(np.float32) if hashes else np.zeros((0, 0), np.float32)
        np.savez(buf, model=np.array(self.model_id), hashes=np.array(hashes, dtype=str), vectors=matrix)
        self.store.put(self.key(source_uri), buf.getvalue(), "application/octet-stream")

    def delete(self, source_uri: str) -> None:
        self.store.delete(self.key(source_uri))
