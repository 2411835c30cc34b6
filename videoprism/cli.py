"""The `videoprism` command line."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading

import torch

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UsageError(Exception):
    """A command-line mistake: printed with exit code 2."""


def _config_arg(value: str | None):
    """A preset name passes through; a path is read as a config.json."""
    from .configuration import PRESETS, load_config_dict

    if value is None or value in PRESETS:
        return value
    try:
        with open(value, encoding="utf-8") as f:
            return load_config_dict(json.load(f))
    except OSError as err:
        raise UsageError(f"--config {value!r} is neither a preset ({', '.join(PRESETS)}) nor a readable file") from err


def _cmd_info(args) -> int:
    from .auto import describe

    info = describe(args.source, config=_config_arg(args.config), revision=args.revision)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"source:      {info['source']}")
    print(f"resolved:    {info['resolved']}")
    print(f"model class: {info['model_class']}")
    print(f"parameters:  {info['num_parameters']:,} in {info['num_tensors']} tensors")
    print("config:")
    print(json.dumps(info["config"], indent=2, sort_keys=True))
    return EXIT_OK


def _cmd_convert(args) -> int:
    from .auto import load_model

    model = load_model(args.source, config=_config_arg(args.config), revision=args.revision, dtype=DTYPES[args.dtype])
    model.save_pretrained(args.out_dir)
    print(f"wrote {type(model).__name__} ({model.num_parameters():,} parameters) to {args.out_dir}")
    return EXIT_OK


def _positive(kind: type) -> object:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _tool_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean embed/search/classify could not run as asked (bad inputs, model or store): exit code 2."""
    from ._flax import CheckpointError
    from .embedding import DecodingWorkerError, EmbedSettingsError, NoVideosFoundError, VideoInputNotFoundError
    from .store import StoreError
    from .tokenization import TokenizerNotFoundError
    from .video_io import VideoDecodeError

    return (
        CheckpointError,
        DecodingWorkerError,
        EmbedSettingsError,
        NoVideosFoundError,
        StoreError,
        TokenizerNotFoundError,
        VideoDecodeError,
        VideoInputNotFoundError,
    )


def _run_tool(args, run) -> int:
    try:
        return run(args)
    except _tool_errors() as err:
        print(f"videoprism {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_embed(args) -> int:
    from .embedding import embed_videos

    def terminate(signum, frame):  # unwind (stop the workers, release the store) as on Ctrl-C
        raise SystemExit(128 + signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    options = dict(
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_frames=args.num_frames,
        window=args.window,
        stride=args.stride,
        frames=args.frames,
        retry_failed=args.retry_failed,
        progress=False if args.quiet else "auto",
    )
    try:
        if args.engine == "ray":
            from .ray_engine import RayNotInstalledError, embed_videos_ray

            try:
                summary = embed_videos_ray(
                    args.inputs,
                    args.out,
                    args.model,
                    address=args.address,
                    num_gpus_per_worker=args.num_gpus_per_worker,
                    concurrency=args.concurrency,
                    **options,
                )
            except RayNotInstalledError as err:
                raise UsageError(str(err)) from err
        else:
            summary = embed_videos(args.inputs, args.out, args.model, workers=args.workers, **options)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        rate = f", {summary.clips_per_second:.2f} clips/s" if summary.clips else ""
        print(
            f"embedded {summary.embedded} of {summary.videos} videos ({summary.clips} clips{rate}) into "
            f"{summary.store}; skipped {summary.skipped} already stored; {summary.failed} failed"
        )
        if summary.skipped_failed:
            print(
                f"({summary.skipped_failed} skipped videos failed in an earlier run; --retry-failed tries them again)"
            )
        for path, message in summary.warnings:
            print(f"warning: {path}: {message}", file=sys.stderr)
    for path, error in summary.failures:
        print(f"failed: {error if error.startswith(path) else f'{path}: {error}'}", file=sys.stderr)
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def _window_text(meta: dict) -> str:
    if meta.get("kind") == "video":
        return "video (pooled)"
    start, end = meta.get("start"), meta.get("end")
    if start is None or end is None or start != start or end != end:
        return "whole video"
    return f"{start:.2f}-{end:.2f} s"


def _cmd_search(args) -> int:
    from .search import search_text, search_video

    if (args.query is None) == (args.video is None):
        raise UsageError(
            "give either a text query or --video CLIP, not both" if args.query else "give a text query or --video CLIP"
        )
    kind = None if args.kind == "all" else args.kind
    common = dict(model=args.model, kind=kind, device=args.device, dtype=args.dtype)
    if args.video is not None:
        hits = search_video(args.store, args.video, args.k, **common)
    else:
        hits = search_text(args.store, args.query, args.k, **common)

    def seconds(x):
        return None if x is None or x != x else float(x)

    rows = []
    for i, hit in enumerate(hits, 1):
        meta = hit.metadata
        rows.append({"rank": i, "score": hit.score, "path": meta["path"], "start": seconds(meta["start"]),
                     "end": seconds(meta["end"])})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'rank':>4}  {'score':>7}  {'window':<16}  path")
    for row, hit in zip(rows, hits, strict=True):
        print(f"{row['rank']:>4}  {row['score']:>7.4f}  {_window_text(hit.metadata):<16}  {row['path']}")
    return EXIT_OK


def _labels(args) -> list[str]:
    if args.labels is not None:
        labels = [label.strip() for label in args.labels.split(",")]
    else:
        try:
            with open(args.labels_file, encoding="utf-8") as f:
                labels = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as err:
            raise UsageError(f"cannot read --labels-file {args.labels_file!r} ({err})") from err
    labels = [label for label in labels if label]
    if len(labels) < 2:
        raise UsageError(f"zero-shot classification needs at least two labels, got {labels}")
    if len(set(labels)) != len(labels):
        raise UsageError(f"labels repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
    return labels


def _cmd_classify(args) -> int:
    from .search import classify_video_files
    from .zero_shot_metadata import TEMPLATE_ENSEMBLES

    labels = _labels(args)
    if args.templates not in TEMPLATE_ENSEMBLES and "{}" not in args.templates:
        raise UsageError(
            f"--templates {args.templates!r} is neither an ensemble ({', '.join(TEMPLATE_ENSEMBLES)}) nor a template "
            "with {} where the label goes"
        )
    results = classify_video_files(
        args.videos,
        labels,
        args.model,
        args.templates,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        workers=args.workers,
        num_frames=args.num_frames,
    )
    ok = [r for r in results if r.error is None]
    if args.json:
        print(json.dumps([r.to_dict() for r in ok], indent=2))
    else:
        for r in ok:
            print(r.video)
            for label, p in r.labels[: args.top_k]:
                print(f"  {p:7.4f}  {label}")
    for r in results:
        if r.error is not None:
            print(f"failed: {r.error if r.error.startswith(r.video) else f'{r.video}: {r.error}'}", file=sys.stderr)
    return EXIT_PARTIAL if len(ok) < len(results) else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoprism", description="VideoPrism video foundation models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def source_args(p):
        p.add_argument("source", help="preset name, hub repo id, local folder, .npz or .safetensors file")
        p.add_argument("--config", help="preset name or config.json to use when the source carries no config")
        p.add_argument("--revision", help="hub branch, tag, commit or ref (e.g. refs/pr/4)")

    info = commands.add_parser(
        "info",
        help="show a checkpoint's config, parameter count and files",
        epilog="example: videoprism info google/videoprism-lvt-base-f16r288",
    )
    source_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_cmd_info)

    convert = commands.add_parser(
        "convert",
        help="write a transformers-format folder (config.json + model.safetensors)",
        epilog="example: videoprism convert google/videoprism-base-f16r288 ./videoprism-base",
    )
    source_args(convert)
    convert.add_argument("out_dir", help="folder to write")
    convert.add_argument("--dtype", choices=list(DTYPES), default="float32")
    convert.set_defaults(run=_cmd_convert)

    def model_args(p, default_model: str | None):
        if default_model is None:
            p.add_argument("--model", help="model to embed queries with (default: the one the store records)")
        else:
            p.add_argument(
                "--model",
                default=default_model,
                help=f"preset name, hub repo id, local folder, .npz or .safetensors file (default: {default_model})",
            )
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
        p.add_argument("--dtype", choices=list(DTYPES), default=None, help="weights dtype (default: float32)")

    def decode_args(p):
        p.add_argument("--batch-size", type=_positive(int), default=8, help="clips per forward pass (default: 8)")
        p.add_argument(
            "--workers",
            type=_non_negative_int,
            default=None,
            help="decoding processes (0: decode in a thread; default: one per spare core, at most 8)",
        )
        p.add_argument("--num-frames", type=_positive(int), help="frames per clip (default: the model's)")

    from .embedding import DEFAULT_MODEL
    from .export import add_export_command

    formatter = argparse.RawDescriptionHelpFormatter
    embed = commands.add_parser(
        "embed",
        help="embed videos (files, folders, globs, @list.txt) into an embedding store; resumable",
        description="Embed videos into an embedding store (a folder of fp16 .npy shards + Parquet metadata). "
        "Re-running skips the videos already stored (same path, size, mtime and model); an interrupted run loses at "
        "most the batch in flight. Videos that fail to decode are recorded in the store and listed at the end.",
        epilog="examples:\n"
        "  videoprism embed ~/videos --out ./store\n"
        "  videoprism embed 'clips/**/*.mp4' @more.txt --out ./store --window 5 --stride 2.5 --dtype bfloat16\n\n"
        "exit codes: 0 ok, 1 some videos failed (the rest are embedded), 2 usage error",
        formatter_class=formatter,
    )
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder, glob, URL or @list.txt")
    embed.add_argument("--out", required=True, metavar="STORE", help="store folder (created if needed)")
    model_args(embed, DEFAULT_MODEL)
    decode_args(embed)
    embed.add_argument("--window", type=_positive(float), metavar="SECONDS", help="one embedding per window")
    embed.add_argument("--stride", type=_positive(float), metavar="SECONDS", help="window step (default: --window)")
    embed.add_argument("--frames", action="store_true", help="also store per-frame embeddings")
    embed.add_argument("--retry-failed", action="store_true", help="try again videos recorded as failed")
    embed.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    embed.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="where to run (see docs/scale-out.md)"
    )
    embed.add_argument("--address", help="Ray cluster: auto, ray://HOST:PORT; default: a local Ray instance")
    embed.add_argument("--num-gpus-per-worker", type=float, default=0, help="GPUs per Ray inference actor")
    embed.add_argument("--concurrency", type=_positive(int), help="Ray inference actors (default: as many as fit)")
    embed.set_defaults(run=lambda args: _run_tool(args, _cmd_embed))

    search = commands.add_parser(
        "search",
        help="search a store by text, or by a query video (--video)",
        description="Rank the clips of an embedding store by cosine similarity to a text (embedded with the store's "
        "model unless --model is given) or to a query video.",
        epilog="examples:\n"
        '  videoprism search ./store "a dog catching a frisbee" -k 5\n'
        "  videoprism search ./store --video query.mp4 --json\n\n"
        "exit codes: 0 ok, 2 usage error (no store, no text tower, ...)",
        formatter_class=formatter,
    )
    search.add_argument("store", metavar="STORE", help="store folder written by `videoprism embed`")
    search.add_argument("query", nargs="?", help="text query")
    search.add_argument("--video", metavar="CLIP", help="query video instead of a text")
    search.add_argument("-k", type=_positive(int), default=10, help="number of results (default: 10)")
    search.add_argument("--kind", choices=["all", "clip", "window", "video"], default="all", help="rows to search")
    search.add_argument("--json", action="store_true", help='print [{"rank", "score", "path", "start", "end"}, ...]')
    model_args(search, None)
    search.set_defaults(run=lambda args: _run_tool(args, _cmd_search))

    classify = commands.add_parser(
        "classify",
        help="zero-shot classify videos over a list of labels",
        description="Zero-shot classification with a video-text model: each video is scored against a prompt per "
        "label (or the mean of a prompt ensemble); probabilities are a softmax over the labels.",
        epilog="examples:\n"
        '  videoprism classify clip.mp4 --labels "playing drums,walking the dog,cooking"\n'
        "  videoprism classify ~/videos --labels-file kinetics.txt --templates ensemble --json\n\n"
        "exit codes: 0 ok, 1 some videos failed (the rest are classified), 2 usage error",
        formatter_class=formatter,
    )
    classify.add_argument("videos", nargs="+", metavar="VIDEO", help="video file, folder, glob, URL or @list.txt")
    labels = classify.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated class names")
    labels.add_argument("--labels-file", metavar="FILE", help="class names, one per line")
    classify.add_argument(
        "--templates",
        default="default",
        help='prompt templates: "default" (a video of {}.), "ensemble" (Kinetics prompts) or a template with {}',
    )
    classify.add_argument("--top-k", type=_positive(int), default=5, help="labels shown per video (default: 5)")
    classify.add_argument("--json", action="store_true", help="print every label's probability as JSON")
    model_args(classify, DEFAULT_MODEL)
    decode_args(classify)
    classify.set_defaults(run=lambda args: _run_tool(args, _cmd_classify))
    add_export_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._flax import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        print(f"videoprism {args.command}: interrupted; what was written is kept (re-run to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"videoprism {args.command}: error: {err}", file=sys.stderr)
        return EXIT_PARTIAL


if __name__ == "__main__":
    sys.exit(main())
