"""`videoprism probe train|eval` and `videoprism classify --model CLASSIFIER`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
CACHE_CHOICES = ("tokens", "pooled2", "pooled4")
POOLED_GAP = 0.05  # top-1 lost between the pooled cache and the saved model that calls for a warning


def probe_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a probe command could not run as asked (bad data, settings, model): exit code 2."""
    from .._flax import CheckpointError
    from ..video_io import VideoDecodeError
    from .classifier import NotAClassifierError
    from .data import LabelledSetError, LabelledSetNotFoundError
    from .features import FeatureCacheError, FeatureExtractionError, FeatureSettingsError
    from .train import ProbeResumeError, ProbeSettingsError

    return (
        CheckpointError,
        FeatureCacheError,
        FeatureExtractionError,
        FeatureSettingsError,
        LabelledSetError,
        LabelledSetNotFoundError,
        NotAClassifierError,
        ProbeResumeError,
        ProbeSettingsError,
        VideoDecodeError,
    )


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Any:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        bad = (value <= low if low_open else value < low) or (high is not None and value >= high)
        if bad or (kind is float and not math.isfinite(value)):
            bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} in {bounds}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _run(args, command) -> int:
    try:
        return command(args)
    except probe_errors() as err:
        print(f"videoprism probe {args.probe_command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_train(args) -> int:
    from .api import train_probe

    run = train_probe(
        args.data,
        args.out,
        args.model,
        val=args.val,
        val_split=args.val_split,
        shots=args.shots,
        cache=args.cache,
        cache_dir=args.cache_dir,
        unfreeze=args.unfreeze,
        grad_accum=args.grad_accum,
        num_frames=args.num_frames,
        workers=args.workers,
        head=args.head,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        label_smoothing=args.label_smoothing,
        dropout=args.dropout,
        patience=args.patience,
        seed=args.seed,
        bf16="auto" if args.bf16 else False,
        device=args.device,
        progress=not args.quiet,
    )
    metrics = run.metrics
    if args.json:
        print(json.dumps(metrics, indent=2))
        return EXIT_OK
    if not args.quiet:
        cached, saved = metrics["val_features"], metrics.get("val", {})
        epochs = len(metrics["history"])
        print(f"trained a {args.head} probe on {metrics['n_train']} clips, {len(metrics['classes'])} classes; "
              f"best epoch {metrics['best_epoch']} of {epochs}")  # fmt: skip
        if cached:
            print(f"validation ({metrics['n_val']} clips), on the cached features: top-1 {cached['top1']:.4f}")
        if saved:
            print(f"validation, saved model on the videos: top-1 {saved['top1']:.4f}, top-5 {saved['top5']:.4f}, "
                  f"mean class accuracy {saved['mean_class_accuracy']:.4f}")  # fmt: skip
        if cached and saved and args.cache != "tokens" and saved["top1"] < cached["top1"] - POOLED_GAP:
            print(
                f"warning: the saved model (full tokens) scores {cached['top1'] - saved['top1']:.3f} below the head "
                f"on the {args.cache} cache; --cache tokens trains on what the saved model sees",
                file=sys.stderr,
            )
        print(f"wrote {run.out}")
    return EXIT_OK


def _cmd_eval(args) -> int:
    from .api import evaluate_probe

    metrics = evaluate_probe(args.model_dir, args.data, batch_size=args.batch_size, device=args.device, quiet=False)
    failures = metrics.pop("failures", [])
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key in ("top1", "top5", "mean_class_accuracy", "map"):
            if key in metrics:
                print(f"{key:<20} {metrics[key]:.4f}")
        print(f"{'n':<20} {metrics['n']}")
    for path, message in failures:
        print(f"failed: {message if message.startswith(path) else f'{path}: {message}'}", file=sys.stderr)
    return EXIT_PARTIAL if failures else EXIT_OK


def is_classifier_folder(model: str) -> bool:
    """Whether `model` is a folder holding a trained classifier (a config.json with `id2label`)."""
    import os

    path = os.path.join(os.path.expanduser(model), "config.json")
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return bool(config.get("id2label")) and "VideoPrismForVideoClassification" in (config.get("architectures") or [])


def classify_command(args) -> int:
    """`videoprism classify VIDEO --model CLASSIFIER`: the labels come from the classifier's `id2label`."""
    from ..collection.inputs import expand_inputs
    from ..errors import NoVideosFoundError
    from .api import classify_with_probe

    try:
        paths = expand_inputs(args.videos)
        if not paths:
            raise NoVideosFoundError(f"no video files found in {args.videos!r}")
        results = classify_with_probe(paths, args.model, batch_size=args.batch_size, device=args.device)
    except probe_errors() as err:
        print(f"videoprism classify: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    ok = [r for r in results if "error" not in r]
    if args.json:
        print(json.dumps(ok, indent=2))
    else:
        for r in ok:
            print(r["video"])
            for row in r["labels"][: args.top_k]:
                print(f"  {row['probability']:7.4f}  {row['label']}")
    for r in results:
        if "error" in r:
            print(f"failed: {r['error']}", file=sys.stderr)
    return EXIT_PARTIAL if len(ok) < len(results) else EXIT_OK


def add_probe_commands(commands: argparse._SubParsersAction, default_model: str) -> None:
    """Adds `videoprism probe train` and `videoprism probe eval` to the CLI's sub-commands."""
    formatter = argparse.RawDescriptionHelpFormatter
    probe = commands.add_parser(
        "probe",
        help="train and evaluate classifiers on frozen VideoPrism features (see docs/probe.md)",
        description="Train a classifier head on a labelled video set with the encoder frozen (the paper's probe "
        "protocol), save it as a VideoPrismForVideoClassification folder, and evaluate it.",
        formatter_class=formatter,
    )
    sub = probe.add_subparsers(dest="probe_command", required=True, metavar="PROBE_COMMAND")
    train = sub.add_parser(
        "train",
        help="train a probe; writes a classifier folder (resumable)",
        description="Extract (and cache) frozen features of DATA, train a head on them, and write --out as a "
        "transformers-format VideoPrismForVideoClassification folder with metrics.json and confusion_matrix.png. "
        "A killed run resumes from its last finished epoch when run again with the same settings.",
        epilog="examples:\n"
        "  videoprism probe train ./clips --out ./my-classifier\n"
        "  videoprism probe train train.csv --val val.csv --out ./k400-probe --lr 1e-4 --epochs 5 --shots 10\n\n"
        "DATA: a folder with one sub-folder per class, or a CSV/JSONL of path,label[,start,end] "
        "(several labels joined by |)\n"
        "exit codes: 0 ok, 2 usage error (bad data set, settings or model)",
        formatter_class=formatter,
    )
    train.add_argument("data", metavar="DATA", help="labelled videos: class folders, or a CSV/JSONL file")
    train.add_argument("--out", required=True, metavar="DIR", help="classifier folder to write")
    train.add_argument("--model", default=default_model, help=f"encoder checkpoint (default: {default_model})")
    held_out = train.add_mutually_exclusive_group()
    held_out.add_argument("--val", metavar="DATA", help="validation set (default: --val-split of DATA)")
    held_out.add_argument(
        "--val-split", type=_number(float, 0, 1, low_open=True), default=0.2, help="share held out (default: 0.2)"
    )
    train.add_argument("--shots", type=_number(int, 1), metavar="K", help="train on K clips per class")
    train.add_argument("--head", choices=("attentive", "linear"), default="attentive", help="(default: attentive)")
    train.add_argument("--cache", choices=CACHE_CHOICES, default="tokens", help="feature cache (default: tokens)")
    train.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: DIR/feature-cache)")
    train.add_argument("--epochs", type=_number(int, 1), default=10, help="(default: 10)")
    train.add_argument("--lr", type=_number(float, 0, low_open=True), default=1e-3, help="peak learning rate")
    train.add_argument("--batch-size", type=_number(int, 1), default=16, help="clips per step (default: 16)")
    train.add_argument("--weight-decay", type=_number(float, 0), default=1e-4, help="AdamW decay (default: 1e-4)")
    train.add_argument("--warmup", type=_number(float, 0, 1), default=0.1, help="warm-up share of the steps")
    train.add_argument("--label-smoothing", type=_number(float, 0, 1), default=0.1, help="(default: 0.1)")
    train.add_argument("--dropout", type=_number(float, 0, 1), default=0.1, help="before the classifier")
    train.add_argument("--patience", type=_number(int, 0), default=5, help="epochs without progress (0: off)")
    train.add_argument("--seed", type=_number(int, 0), default=0, help="split, shots, init, order (default: 0)")
    train.add_argument("--no-bf16", dest="bf16", action="store_false", help="no bfloat16 autocast")
    train.add_argument("--unfreeze", type=_number(int, 0), default=0, metavar="N", help="also train N encoder layers")
    train.add_argument("--grad-accum", type=_number(int, 1), default=1, help="batches per update (with --unfreeze)")
    train.add_argument("--num-frames", type=_number(int, 1), help="frames per clip (default: the model's)")
    train.add_argument("--workers", type=_number(int, 0), help="decoding processes for feature extraction")
    train.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    train.add_argument("--json", action="store_true", help="print metrics.json")
    train.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    train.set_defaults(run=lambda args: _run(args, _cmd_train))

    evaluate = sub.add_parser(
        "eval",
        help="accuracy of a trained classifier on labelled videos",
        epilog="example:\n  videoprism probe eval ./my-classifier test.csv --json\n\n"
        "exit codes: 0 ok, 1 some videos failed to decode (the rest are counted), 2 usage error",
        formatter_class=formatter,
    )
    evaluate.add_argument("model_dir", metavar="DIR", help="classifier folder written by `videoprism probe train`")
    evaluate.add_argument("data", metavar="DATA", help="labelled videos: class folders, or a CSV/JSONL file")
    evaluate.add_argument("--batch-size", type=_number(int, 1), default=8, help="clips per forward pass")
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    evaluate.add_argument("--json", action="store_true", help='print {"top1", "top5", "mean_class_accuracy", "n"}')
    evaluate.set_defaults(run=lambda args: _run(args, _cmd_eval))
