"""The reference runtime: sentence-transformers on torch.

It is what the bulk process pool runs (it measured faster there than ONNX Runtime, see
bench/first_contact_bench.py) and what every ONNX export is checked against, so both load the
model the same way, here, offline and without progress bars.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


class TorchModel:
    """sentence-transformers behind the same `encode(texts, batch_size)` as OnnxModel."""

    def __init__(self, model_dir: Path, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights ship in the package
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar per process is noise in a run's log

        self.st = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return self.st.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)
