"""Training a probe head on cached features: AdamW, warm-up + cosine schedule, early stopping, resumable epochs."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..collection.embedder import auto_dtype, resolve_device
from ..configuration import VideoPrismVisionConfig
from ..errors import ProbeResumeError, ProbeSettingsError
from .features import ProbeFeatures
from .heads import HEADS, build_head
from .metrics import classification_metrics

CHECKPOINT_NAME = "checkpoint.pt"
ROWS_PER_READ = 64  # clips read at once from a memmapped cache when averaging tokens


@dataclass
class ProbeSettings:
    """Hyperparameters of a probe run (the CLI's flags).

    Attributes:
        head: "attentive" (the classifier's attention pooler + LayerNorm + linear) or "linear" (mean of the tokens).
        epochs: Passes over the training clips.
        lr: Peak learning rate of AdamW.
        batch_size: Clips per step.
        weight_decay: AdamW's decoupled weight decay.
        warmup: Fraction of the steps spent warming the learning rate up linearly; a cosine decay to 0 follows.
        label_smoothing: Single-label: cross-entropy smoothing; multi-label: targets move this far towards 1/2.
        dropout: Dropout before the classifier.
        patience: Stop after this many epochs without a better validation score (0: never stop early).
        seed: Seeds the head's initialisation, the batch order and dropout.
        bf16: Autocast to bfloat16 ("auto": where the hardware computes it natively: CUDA, or CPUs with AVX-512
            BF16 / AMX).
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        progress: A tqdm bar with the loss and validation accuracy.
    """

    head: str = "attentive"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 1e-4
    warmup: float = 0.1
    label_smoothing: float = 0.1
    dropout: float = 0.1
    patience: int = 5
    seed: int = 0
    bf16: bool | str = "auto"
    device: str = "auto"
    progress: bool = False

    def __post_init__(self):
        checks = {
            "head": self.head in HEADS,
            "epochs": _is_int(self.epochs) and self.epochs >= 1,
            "lr": _is_real(self.lr) and self.lr > 0,
            "batch_size": _is_int(self.batch_size) and self.batch_size >= 1,
            "weight_decay": _is_real(self.weight_decay) and self.weight_decay >= 0,
            "warmup": _is_real(self.warmup) and 0 <= self.warmup < 1,
            "label_smoothing": _is_real(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            "dropout": _is_real(self.dropout) and 0 <= self.dropout < 1,
            "patience": _is_int(self.patience) and self.patience >= 0,
            "seed": _is_int(self.seed) and self.seed >= 0,
            "bf16": self.bf16 in (True, False, "auto"),
        }
        expected = {
            "head": f"one of {HEADS}",
            "bf16": "True, False or 'auto'",
            "warmup": "a fraction in [0, 1)",
            "label_smoothing": "in [0, 1)",
            "dropout": "in [0, 1)",
        }
        for name, ok in checks.items():
            if not ok:
                want = expected.get(name, "a non-negative number" if name != "epochs" else "a positive integer")
                raise ProbeSettingsError(f"{name}={getattr(self, name)!r} is invalid; expected {want}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the trained head (a resumed run must match them)."""
        out = dataclasses.asdict(self)
        for key in ("progress", "device", "bf16"):
            out.pop(key)
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ProbeResult:
    """A trained head and its history.

    Attributes:
        head: The head with the best validation score (the last epoch's without a validation set).
        history: One dict per epoch: ``{"epoch", "train_loss", "lr", "val_loss", "val_top1", ...}``.
        best_epoch: The epoch of `head` (1-based).
        val_metrics: The best head's validation metrics on the cached features (empty without a validation set).
        val_logits: Its validation logits (None without a validation set).
        resumed_from: The epoch a resumed run started after (0: a fresh run).
    """

    head: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_metrics: dict[str, float] = field(default_factory=dict)
    val_logits: np.ndarray | None = None
    resumed_from: int = 0


def use_bf16(setting: bool | str, device: torch.device) -> bool:
    """Autocast to bfloat16: "auto" where `device` computes it natively (as `--dtype auto` decides), else as set."""
    return auto_dtype(device) == torch.bfloat16 if setting == "auto" else bool(setting)


def check_features(features: ProbeFeatures, head: str, where: str) -> None:
    """Raises ProbeSettingsError when `features` cannot train or validate a `head` probe."""
    n = len(features.targets)
    if n == 0:
        raise ProbeSettingsError(f"{where} holds no clips; give a data set with labelled videos")
    if features.targets.ndim != 2 or features.targets.shape[1] != len(features.class_names):
        raise ProbeSettingsError(
            f"{where}: targets of shape {features.targets.shape} do not match {len(features.class_names)} classes"
        )
    if features.tokens is None:
        # The linear head needs the mean of the tokens too: the cached embedding is L2-normalised (or the LvT
        # tower's), which the saved classifier cannot compute.
        raise ProbeSettingsError(
            f"{where} has no cached tokens; the {head} head needs a token cache (--cache tokens, pooled2 or pooled4)"
        )
    if features.tokens is not None and features.tokens.ndim != 4:
        raise ProbeSettingsError(f"{where}: tokens must be (n, T, S, D), got shape {features.tokens.shape}")


def mean_embeddings(features: ProbeFeatures) -> np.ndarray:
    """(n, D) float32 mean of each clip's tokens (average pooling of the grid keeps the mean), read in chunks."""
    tokens = features.tokens
    out = np.empty((tokens.shape[0], tokens.shape[-1]), dtype=np.float32)
    for start in range(0, len(out), ROWS_PER_READ):
        chunk = np.asarray(tokens[start : start + ROWS_PER_READ], dtype=np.float32)
        out[start : start + ROWS_PER_READ] = chunk.reshape(len(chunk), -1, chunk.shape[-1]).mean(axis=1)
    return out


class FeatureBatches:
    """Batches of head inputs read from (memmapped) features: only one batch of tokens is in memory at a time."""

    def __init__(self, features: ProbeFeatures, head: str):
        self.targets = np.asarray(features.targets, dtype=np.float32)
        self.multi_label = features.multi_label
        self.tokens = features.tokens if head == "attentive" else None
        self.embeddings = mean_embeddings(features) if head == "linear" else None

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ((B, T*S, D) tokens or (B, D) embeddings) and (B, C) targets of the clips `indices` (sorted)."""
        if self.tokens is not None:
            x = np.asarray(self.tokens[indices], dtype=np.float32)
            x = x.reshape(len(indices), -1, x.shape[-1])
        else:
            x = self.embeddings[indices]
        return torch.from_numpy(x), torch.from_numpy(self.targets[indices])

    def ordered(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, len(self))))


def probe_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool, smoothing: float) -> torch.Tensor:
    """Cross-entropy with label smoothing (single-label) or binary cross-entropy with smoothed targets."""
    logits = logits.float()
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets * (1 - smoothing) + smoothing / 2)
    return F.cross_entropy(logits, targets.argmax(dim=1), label_smoothing=smoothing)


def warmup_cosine(total_steps: int, warmup: float):
    """The LambdaLR factor: linear warm-up over `warmup` of the steps, then a cosine decay to 0."""
    warm = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def predict(head: nn.Module, data: FeatureBatches, batch_size: int, device: torch.device, bf16: bool) -> np.ndarray:
    """(n, C) float32 logits of every clip of `data`."""
    head.eval()
    out = []
    for x, _ in data.ordered(batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(head(x.to(device)).float().cpu())
    return torch.cat(out).numpy()


def _validation(head, data, settings, device, bf16) -> tuple[dict[str, float], np.ndarray]:
    logits = predict(head, data, settings.batch_size, device, bf16)
    loss = probe_loss(torch.from_numpy(logits), torch.from_numpy(data.targets), data.multi_label, 0.0).item()
    metrics = classification_metrics(logits, data.targets, data.multi_label)
    return {"val_loss": loss, **{f"val_{k}": v for k, v in metrics.items() if k != "n"}}, logits


def score_of(metrics: dict[str, float], multi_label: bool) -> float:
    """The validation score early stopping maximises: mAP for multi-label sets, top-1 otherwise."""
    return metrics["val_map"] if multi_label else metrics["val_top1"]


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Writes the epoch checkpoint atomically (a kill leaves the previous one intact)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def fit_head(
    train: ProbeFeatures,
    val: ProbeFeatures | None,
    config: VideoPrismVisionConfig,
    settings: ProbeSettings,
    checkpoint_dir: str | os.PathLike | None = None,
) -> ProbeResult:
    """Trains a probe head on cached features.

    Args:
        train: Training features.
        val: Validation features (early stopping and the best epoch), or None (the last epoch is kept).
        config: The encoder's vision config (widths, LayerNorm epsilon, initialisation).
        settings: Hyperparameters.
        checkpoint_dir: Where the epoch checkpoint goes; a run finding one of the same settings there resumes after
            its last finished epoch.

    Raises:
        ProbeSettingsError: Features without what the head needs, or train and val with different classes.
        ProbeResumeError: `checkpoint_dir` holds a checkpoint of other settings or data.
    """
    check_features(train, settings.head, "the training set")
    if val is not None:
        check_features(val, settings.head, "the validation set")
        if list(val.class_names) != list(train.class_names):
            raise ProbeSettingsError("the validation set's classes differ from the training set's; split one data set")
    dim = train.tokens.shape[-1]
    if dim != config.hidden_size:
        raise ProbeSettingsError(f"features of width {dim} do not match the model's hidden size {config.hidden_size}")
    train_data = FeatureBatches(train, settings.head)
    val_data = FeatureBatches(val, settings.head) if val is not None else None
    identity = {"settings": settings.fingerprint(), "classes": list(train.class_names), "n_train": len(train_data)}
    with torch.random.fork_rng(devices=[]):  # the seed governs this run only, not the caller's random stream
        torch.manual_seed(settings.seed)
        head = build_head(settings.head, config, len(train.class_names), settings.dropout)
        return train_loop(head, train_data, val_data, settings, identity, checkpoint_dir)


def train_loop(
    module: nn.Module,
    train_data: Any,
    val_data: Any | None,
    settings: ProbeSettings,
    identity: dict[str, Any],
    checkpoint_dir: str | os.PathLike | None,
    grad_accum: int = 1,
) -> ProbeResult:
    """The epochs shared by head training and fine-tuning: AdamW over `module`'s trainable parameters,
    warm-up + cosine schedule, validation and early stopping, an atomic checkpoint after every epoch.

    Args:
        module: Maps a batch's inputs to logits; its parameters with ``requires_grad`` are trained.
        train_data: ``len()``, ``batch(sorted indices) -> (inputs, targets)``, ``targets``, ``multi_label``.
        val_data: The same for validation (``ordered(batch_size)`` too), or None.
        identity: What a resumed run must share with the checkpoint.
        grad_accum: Batches whose gradients are summed per optimiser step.
    """
    device = resolve_device(settings.device)
    bf16 = use_bf16(settings.bf16, device)
    module.to(device)
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    batches = math.ceil(len(train_data) / settings.batch_size)
    steps_per_epoch = math.ceil(batches / grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(settings.epochs * steps_per_epoch, settings.warmup)
    )

    def weights() -> dict[str, torch.Tensor]:
        named = dict(module.named_parameters())
        return {name: named[name].detach().cpu().clone() for name in trainable}

    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_score": -math.inf, "best_epoch": 0}
    path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_NAME)
    if path is not None and os.path.exists(path):
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("identity") != identity:
            raise ProbeResumeError(
                f"{path} is the checkpoint of another run (other settings, classes or training clips); "
                "give another --out folder or delete it to start afresh"
            )
        module.load_state_dict(saved["weights"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = saved["state"]
    resumed_from = state["epoch"]

    bar = None
    if settings.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.epochs * batches, initial=resumed_from * batches, desc="probe", unit="batch")
    try:
        for epoch in range(resumed_from + 1, settings.epochs + 1):
            if val_data is not None and settings.patience and epoch - state["best_epoch"] > settings.patience:
                break
            module.train()
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(train_data))
            losses = []
            optimizer.zero_grad(set_to_none=True)
            for b, start in enumerate(range(0, len(order), settings.batch_size)):
                x, y = train_data.batch(np.sort(order[start : start + settings.batch_size]))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = module(x.to(device))
                loss = probe_loss(logits, y.to(device), train_data.multi_label, settings.label_smoothing)
                (loss / grad_accum).backward()
                if (b + 1) % grad_accum == 0 or b + 1 == batches:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0]}
            if val_data is not None:
                metrics, _ = _validation(module, val_data, settings, device, bf16)
                record.update(metrics)
                score = score_of(metrics, train_data.multi_label)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_top1=f"{metrics['val_top1']:.3f}")
            else:
                score = float(epoch)
            state["history"].append(record)
            state["epoch"] = epoch
            if score > state["best_score"]:
                state["best_score"], state["best_epoch"] = score, epoch
                state["best"] = weights()
            if path is not None:
                save_checkpoint(
                    path,
                    {
                        "identity": identity,
                        "weights": weights(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                        "state": state,
                    },
                )
    finally:
        if bar is not None:
            bar.close()

    module.load_state_dict(state["best"], strict=False)
    module.eval()
    result = ProbeResult(module, state["history"], state["best_epoch"], resumed_from=resumed_from)
    if val_data is not None:
        metrics, logits = _validation(module, val_data, settings, device, bf16)
        result.val_metrics = {k.removeprefix("val_"): v for k, v in metrics.items()}
        result.val_metrics["n"] = len(val_data)
        result.val_logits = logits
    module.cpu()
    return result
