"""Frozen-encoder features of a labelled video set, computed once and cached on disk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ProbeFeatures:
    """The features a probe head trains on; arrays may be ``np.memmap`` views of the on-disk cache.

    Attributes:
        tokens: (n, T, S, D) float16 token sequence of each clip (S tokens per frame: the full patch grid, or the
            grid average-pooled by ``pool``), or None when only pooled embeddings were cached.
        embeddings: (n, D) float32 pooled embedding of each clip (the LvT video embedding, or the mean of the
            tokens), or None.
        targets: (n, C) float32 multi-hot targets (one-hot for single-label sets).
        class_names: the C class names, in target column order.
        multi_label: whether a clip may have several labels.
        pool: spatial pooling factor of ``tokens`` (1: full grid; 2: 2x2 average pooling of each frame's grid).
        paths: the source video of each clip (for error messages and reports).
    """

    tokens: np.ndarray | None
    embeddings: np.ndarray | None
    targets: np.ndarray
    class_names: list[str]
    multi_label: bool
    pool: int
    paths: list[str]
