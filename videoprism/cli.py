"""The `videoprism` command line."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import signal
import sys
import threading

from . import errors
from ._text import printable
from .configuration import DTYPE_NAMES
from .errors import UsageError
from .video_io import URL_TIMEOUT_S

EXIT_OK = 0
EXIT_PARTIAL = 1  # some videos failed; the others were processed
EXIT_USAGE = 2  # a usage, input or output error (a bad flag, file or store; a full disk)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the reader of the output went away (128 + SIGPIPE), e.g. `videoprism search ... | head -1`

# Most decoding processes a run starts: each imports torch and holds a decoded video.
MAX_WORKERS = max(1, os.cpu_count() or 1)

# Exit code of each error a command may end with, most specific first. Every public exception (videoprism.errors)
# means the inputs, model or store could not be used as asked; so do the built-in errors that input checks raise.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (UsageError, EXIT_USAGE),
    (errors.CheckpointError, EXIT_USAGE),
    (errors.SourceNotFoundError, EXIT_USAGE),
    (errors.TokenizerNotFoundError, EXIT_USAGE),
    (errors.VideoInputError, EXIT_USAGE),
    (errors.StoreError, EXIT_USAGE),
    (errors.VideoInputNotFoundError, EXIT_USAGE),
    (errors.NoVideosFoundError, EXIT_USAGE),
    (errors.EmbedSettingsError, EXIT_USAGE),
    (errors.DecodingWorkerError, EXIT_USAGE),
    (errors.RayNotInstalledError, EXIT_USAGE),
    (errors.VideoDecodeError, EXIT_USAGE),
    (errors.QueryError, EXIT_USAGE),
    (errors.ItemNotFoundError, EXIT_USAGE),
    (errors.FeatureExtractionError, EXIT_USAGE),
    (errors.DeviceError, EXIT_USAGE),
    (errors.TextInputError, EXIT_USAGE),
    (errors.WriteError, EXIT_USAGE),
    (FileNotFoundError, EXIT_USAGE),
    (PermissionError, EXIT_USAGE),
    (ValueError, EXIT_USAGE),
)
EXIT_CODES_HELP = (
    "exit codes: 0 ok, 1 some videos failed (the others were processed), 2 usage, input or output error "
    "(disk full, read-only folder), 130 interrupted, 141 output closed early (| head)"
)


def exit_code(error: BaseException) -> int | None:
    """The exit code `EXIT_CODES` gives `error`; None for an error it does not list (a bug: shown as a traceback)."""
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return None


def _config_arg(value: str | None):
    """A preset name passes through; a path is read as a config.json."""
    from .configuration import PRESETS, read_config_file

    if value is None or value in PRESETS:
        return value
    try:
        return read_config_file(value)
    except OSError as err:
        raise UsageError(f"--config {value!r} is neither a preset ({', '.join(PRESETS)}) nor a readable file") from err


def _cmd_info(args) -> int:
    from .auto import describe

    info = describe(args.source, config=_config_arg(args.config), revision=args.revision)
    if args.json:
        print(json.dumps(info, indent=2, allow_nan=False))
        return EXIT_OK
    print(f"source:      {printable(str(info['source']))}")
    print(f"resolved:    {printable(str(info['resolved']))}")
    print(f"model class: {info['model_class']}")
    print(f"parameters:  {info['num_parameters']:,} in {info['num_tensors']} tensors")
    print("config:")
    print(json.dumps(info["config"], indent=2, sort_keys=True, allow_nan=False))
    return EXIT_OK


def _cmd_convert(args) -> int:
    from .auto import load_model
    from .collection.embedder import DTYPES

    out = args.out_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"output folder {printable(out)} exists and is not a folder; give a new or existing folder")
    model = load_model(args.source, config=_config_arg(args.config), revision=args.revision, dtype=DTYPES[args.dtype])
    try:
        model.save_pretrained(out)
    except OSError as err:
        reason = "the disk is full" if err.errno == errno.ENOSPC else err.strerror or str(err)
        raise errors.WriteError(err.errno, f"cannot write the converted model to {printable(out)}: {reason}") from err
    print(f"wrote {type(model).__name__} ({model.num_parameters():,} parameters) to {printable(out)}")
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
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _workers(value: int | None) -> int | None:
    """``--workers``, capped at `MAX_WORKERS` (with a note on stderr when capped)."""
    if value is not None and value > MAX_WORKERS:
        print(
            f"videoprism: --workers {value} is more than the {MAX_WORKERS} CPU cores; using {MAX_WORKERS}",
            file=sys.stderr,
        )
        return MAX_WORKERS
    return value


def _cmd_embed(args) -> int:
    from .collection import embed_videos
    from .collection.pipeline import failure_message

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
        network_timeout=args.network_timeout,
        max_clip_bytes=int(args.max_clip_mb * 2**20),
    )
    try:
        if args.engine == "ray":
            from .collection import embed_videos_ray

            summary = embed_videos_ray(
                args.inputs,
                args.out,
                args.model,
                address=args.address,
                num_gpus_per_worker=args.num_gpus_per_worker,
                concurrency=args.concurrency,
                **options,
            )
        else:
            summary = embed_videos(args.inputs, args.out, args.model, workers=_workers(args.workers), **options)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        rate = f", {summary.clips_per_second:.2f} clips/s" if summary.clips else ""
        rate += f", {summary.dtype}" if summary.dtype else ""
        print(
            f"embedded {summary.embedded} of {summary.videos} videos ({summary.clips} clips{rate}) into "
            f"{printable(summary.store)}; skipped {summary.skipped} already stored; {summary.failed} failed"
        )
        if summary.skipped_failed:
            print(
                f"({summary.skipped_failed} skipped videos failed in an earlier run; --retry-failed tries them again)"
            )
        if summary.skipped_media:
            kinds = sorted({os.path.splitext(p)[1].lower() for p in summary.skipped_media})
            print(
                f"note: skipped {len(summary.skipped_media)} files of the folders that are not videos by their "
                f"extension ({', '.join(kinds)}); name a file explicitly to try it",
                file=sys.stderr,
            )
        for path, message in summary.warnings:
            print(f"warning: {printable(path)}: {printable(message)}", file=sys.stderr)
    if args.quiet:  # otherwise the progress report listed each failure as it happened
        for path, error in summary.failures:
            print(failure_message(path, error), file=sys.stderr)
    return EXIT_PARTIAL if summary.failed else EXIT_OK


def _window_text(meta: dict) -> str:
    if meta.get("kind") == "video":
        return "video (pooled)"
    start, end = meta.get("start"), meta.get("end")
    if start is None or end is None or start != start or end != end:
        return "whole video"
    return f"{start:.2f}-{end:.2f} s"


def _cmd_search(args) -> int:
    from .collection import search_text, search_video

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
        rows.append({"rank": i, "score": hit.score, "id": hit.id, "path": meta["path"],
                     "start": seconds(meta["start"]), "end": seconds(meta["end"])})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False))
        return EXIT_OK
    print(f"{'rank':>4}  {'score':>7}  {'window':<16}  path")
    for row, hit in zip(rows, hits, strict=True):
        print(f"{row['rank']:>4}  {row['score']:>7.4f}  {_window_text(hit.metadata):<16}  {printable(row['path'])}")
    return EXIT_OK


def _labels(args) -> list[str]:
    if args.labels is not None:
        labels = [label.strip() for label in args.labels.split(",")]
    else:
        name = printable(args.labels_file)
        try:
            with open(args.labels_file, encoding="utf-8") as f:
                labels = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as err:
            raise UsageError(f"cannot read --labels-file {name} ({err.strerror or err})") from err
        except UnicodeDecodeError as err:
            raise UsageError(
                f"--labels-file {name} is not UTF-8 text (byte {err.start}); give a text file of one label per line"
            ) from err
        if any("\0" in label for label in labels):
            raise UsageError(f"--labels-file {name} holds NUL bytes: it is binary; give one label per line")
    labels = [label for label in labels if label]
    for label in labels:
        _check_text(label, "label")
    if len(labels) < 2:
        raise UsageError(f"zero-shot classification needs at least two labels, got {labels}")
    if len(set(labels)) != len(labels):
        raise UsageError(f"labels repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
    return labels


def _check_text(text: str, what: str) -> None:
    """Refuses a text argument with bytes that are not UTF-8 (they arrive as lone surrogates) or control characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(
            f"{what} {printable(text)} is not valid UTF-8 (byte {printable(text[err.start])} at position "
            f"{err.start}); pass UTF-8 text"
        ) from None
    if any(not c.isprintable() for c in text):
        raise UsageError(f"{what} {printable(text)} holds control characters; remove them")


def _cmd_classify(args) -> int:
    from .collection import classify_video_files
    from .collection.pipeline import failure_message
    from .probe.cli import classify_command, is_classifier_folder
    from .zero_shot import checked_templates
    from .zero_shot_metadata import TEMPLATE_ENSEMBLES

    if args.labels is None and args.labels_file is None:
        if is_classifier_folder(args.model):
            return classify_command(args)
        raise UsageError("give --labels or --labels-file, or --model a classifier folder from `videoprism probe train`")
    labels = _labels(args)
    _check_text(args.templates, "--templates")
    if args.templates not in TEMPLATE_ENSEMBLES:
        try:
            checked_templates(args.templates)
        except errors.TextInputError as err:
            raise UsageError(
                f"--templates {args.templates!r} is neither an ensemble ({', '.join(TEMPLATE_ENSEMBLES)}) nor a "
                f"template with exactly one {{}} where the label goes ({err})"
            ) from None
    results = classify_video_files(
        args.videos,
        labels,
        args.model,
        args.templates,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        workers=_workers(args.workers),
        num_frames=args.num_frames,
        network_timeout=args.network_timeout,
        max_clip_bytes=int(args.max_clip_mb * 2**20),
    )
    ok = [r for r in results if r.error is None]
    if args.json:
        print(json.dumps([r.to_dict() for r in ok], indent=2, allow_nan=False))
    else:
        for r in ok:
            print(printable(r.video))
            for label, p in r.labels[: args.top_k]:
                print(f"  {p:7.4f}  {label}")
    for r in results:
        if r.error is not None:
            print(failure_message(r.video, r.error), file=sys.stderr)
    return EXIT_PARTIAL if len(ok) < len(results) else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videoprism",
        description="VideoPrism video foundation models.",
        epilog=EXIT_CODES_HELP,
    )
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
    info.set_defaults(run=_cmd_info, parser=info)

    convert = commands.add_parser(
        "convert",
        help="write a transformers-format folder (config.json + model.safetensors)",
        epilog="example: videoprism convert google/videoprism-base-f16r288 ./videoprism-base",
    )
    source_args(convert)
    convert.add_argument("out_dir", help="folder to write")
    convert.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    convert.set_defaults(run=_cmd_convert, parser=convert)

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
        p.add_argument(
            "--dtype",
            choices=["auto", *DTYPE_NAMES],
            default="auto",
            help="weights dtype; auto (default): bfloat16 where the device computes it natively (CUDA compute "
            "capability 8.0+, CPUs with AMX or AVX-512 BF16), else float32",
        )

    def decode_args(p):
        p.add_argument("--batch-size", type=_positive(int), default=8, help="clips per forward pass (default: 8)")
        p.add_argument(
            "--workers",
            type=_non_negative_int,
            default=None,
            help=f"decoding processes (0: decode in a thread; default: one per spare core, or per core where they "
            f"decode between the model's batches on the CPU, at most 8; at most {MAX_WORKERS}, the CPU cores)",
        )
        p.add_argument("--num-frames", type=_positive(int), help="frames per clip (default: the model's)")
        p.add_argument(
            "--network-timeout",
            type=_positive(float),
            default=URL_TIMEOUT_S,
            metavar="SECONDS",
            help=f"seconds a URL input may stall before it fails (default: {URL_TIMEOUT_S:g})",
        )
        p.add_argument(
            "--max-clip-mb",
            type=_positive(float),
            default=MAX_CLIP_BYTES / 2**20,
            metavar="MIB",
            help=f"refuse settings whose clips take more memory (default: {MAX_CLIP_BYTES / 2**20:g})",
        )

    from .collection import DEFAULT_MODEL
    from .collection.clips import MAX_CLIP_BYTES
    from .export import add_export_command
    from .probe.cli import add_probe_commands
    from .serve import add_serve_commands

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
        + EXIT_CODES_HELP,
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
    embed.set_defaults(run=_cmd_embed, parser=embed)

    search = commands.add_parser(
        "search",
        help="search a store by text, or by a query video (--video)",
        description="Rank the clips of an embedding store by cosine similarity to a text (embedded with the store's "
        "model unless --model is given) or to a query video.",
        epilog="examples:\n"
        '  videoprism search ./store "a dog catching a frisbee" -k 5\n'
        "  videoprism search ./store --video query.mp4 --json\n\n" + EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    search.add_argument("store", metavar="STORE", help="store folder written by `videoprism embed`")
    search.add_argument("query", nargs="?", help="text query")
    search.add_argument("--video", metavar="CLIP", help="query video instead of a text")
    search.add_argument("-k", type=_positive(int), default=10, help="number of results (default: 10)")
    search.add_argument("--kind", choices=["all", "clip", "window", "video"], default="all", help="rows to search")
    search.add_argument(
        "--json", action="store_true", help='print [{"rank", "score", "id", "path", "start", "end"}, ...]'
    )
    model_args(search, None)
    search.set_defaults(run=_cmd_search, parser=search)

    classify = commands.add_parser(
        "classify",
        help="classify videos: zero-shot over a list of labels, or with a trained classifier (--model DIR)",
        description="Zero-shot classification with a video-text model: each video is scored against a prompt per "
        "label (or the mean of a prompt ensemble); probabilities are a softmax over the labels.",
        epilog="examples:\n"
        '  videoprism classify clip.mp4 --labels "playing drums,walking the dog,cooking"\n'
        "  videoprism classify ~/videos --labels-file kinetics.txt --templates ensemble --json\n\n" + EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    classify.add_argument("videos", nargs="+", metavar="VIDEO", help="video file, folder, glob, URL or @list.txt")
    labels = classify.add_mutually_exclusive_group()
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
    classify.set_defaults(run=_cmd_classify, parser=classify)
    add_serve_commands(commands)  # `serve` and `thumbnails` (videoprism.serve)
    add_probe_commands(commands, DEFAULT_MODEL)  # `probe train` and `probe eval` (videoprism.probe)
    add_export_command(commands)  # `export` (videoprism.export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs a command; returns its exit code (see `EXIT_CODES`)."""
    for stream in (sys.stdout, sys.stderr):  # a message with undecodable bytes must not end in a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    command = "videoprism"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = f"videoprism {args.command}"
        if getattr(args, "query", None) is not None:
            _check_text(args.query, "query")
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        kept = "; what was written is kept (re-run to resume)" if command == "videoprism embed" else ""
        print(f"{command}: interrupted{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        if isinstance(err, UsageError):
            getattr(args, "parser", parser).error(str(err))  # prints the usage line and exits with 2
        print(f"{command}: error: {printable(str(err))}", file=sys.stderr)
        return code


def _broken_pipe() -> int:
    """Exits quietly when the reader of stdout went away (``| head``), as Unix tools do: no traceback, and no
    second error when Python flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
