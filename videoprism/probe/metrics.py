"""Classification metrics of a probe: top-1, top-5, mean per-class accuracy, mAP, confusion matrix."""

from __future__ import annotations

import numpy as np


def classification_metrics(logits: np.ndarray, targets: np.ndarray, multi_label: bool) -> dict[str, float | int]:
    """``{"top1", "top5", "mean_class_accuracy", "n"}`` (+ ``"map"`` for multi-label sets) of (n, C) scores.

    A clip is right at top-k when one of its labels is among its k best-scored classes. Mean per-class accuracy
    averages, over the classes that occur, the top-1 accuracy of the clips carrying that class (for multi-label clips:
    whether the class is among the clip's m best, m its number of labels). mAP averages each class's average
    precision over the classes that occur.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets) > 0.5
    n, num_classes = targets.shape
    if n == 0:
        raise ValueError("no clips to evaluate")
    order = np.argsort(-logits, axis=1, kind="stable")
    hits = np.take_along_axis(targets, order, axis=1)
    out: dict[str, float | int] = {
        "top1": float(hits[:, 0].mean()),
        "top5": float(hits[:, : min(5, num_classes)].any(axis=1).mean()),
    }
    per_class = []
    if multi_label:
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(num_classes)[None].repeat(n, 0), axis=1)
        within = ranks < targets.sum(axis=1, keepdims=True)
        for c in range(num_classes):
            if targets[:, c].any():
                per_class.append(within[targets[:, c], c].mean())
    else:
        truth = targets.argmax(axis=1)
        for c in range(num_classes):
            if (truth == c).any():
                per_class.append((order[truth == c, 0] == c).mean())
    out["mean_class_accuracy"] = float(np.mean(per_class))
    if multi_label:
        out["map"] = mean_average_precision(logits, targets)
    out["n"] = int(n)
    return out


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over the classes with a positive clip of the average precision of ranking clips by score."""
    aps = []
    for c in range(targets.shape[1]):
        positives = targets[:, c]
        if not positives.any():
            continue
        ranked = positives[np.argsort(-scores[:, c], kind="stable")]
        precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
        aps.append(precision[ranked].mean())
    return float(np.mean(aps))


def confusion_matrix(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(C, C) counts: row = true class (a multi-label clip counts once per label), column = top-1 prediction."""
    targets = np.asarray(targets) > 0.5
    num_classes = targets.shape[1]
    predicted = np.asarray(logits).argmax(axis=1)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for row, pred in zip(targets, predicted, strict=True):
        matrix[np.flatnonzero(row), pred] += 1
    return matrix
