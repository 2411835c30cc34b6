"""The `videoprism serve` and `videoprism thumbnails` subcommands (registered by `add_serve_commands`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..configuration import DTYPE_NAMES

__all__ = ["LOCAL_HOSTS", "add_serve_commands"]

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as err:
        print(f"videoprism serve: error: {err.name or err} is not installed; pip install 'videoprism[serve]'",
              file=sys.stderr)  # fmt: skip
        return 2
    from .engine import ServeEngine

    engine = ServeEngine(args.store, args.model, device=args.device, dtype=args.dtype, text_cache=args.text_cache)
    app = create_app(engine, max_upload=args.max_upload_mb * 1024 * 1024)
    reader = engine.reader
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {str(engine.path)!r} ({len(reader)} rows of {reader.model_id}) at http://{host}:{args.port}/ "
          f"(API docs: /docs)", flush=True)  # fmt: skip
    if args.host in LOCAL_HOSTS:
        print(f"listening on {args.host} only: other machines cannot connect (--host 0.0.0.0 serves the network)",
              flush=True)  # fmt: skip
    else:
        print(f"listening on {args.host}: anyone who can reach this machine can search the store and play its videos",
              flush=True)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "info")
    return 0


def _cmd_thumbnails(args: argparse.Namespace) -> int:
    from ..collection.thumbnails import backfill_thumbnails

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 50 == 0):
            print(f"thumbnails: {done}/{total} videos", file=sys.stderr, flush=True)

    summary = backfill_thumbnails(args.store, workers=args.workers, progress=progress)
    if not args.quiet:
        print(f"wrote {summary.written} thumbnails into {args.store!r}; {summary.existing} rows already had one; "
              f"{len(summary.failures)} videos failed")  # fmt: skip
    for path, error in summary.failures:
        print(f"failed: {path!r}: {error}", file=sys.stderr)
    return 1 if summary.failures else 0


def add_serve_commands(commands: Any) -> None:
    """Adds `serve` and `thumbnails` to the CLI's subparsers (their errors reach the CLI's exit-code table).

    Args:
        commands: The object ``ArgumentParser.add_subparsers`` returned.
    """
    formatter = argparse.RawDescriptionHelpFormatter
    serve = commands.add_parser(
        "serve",
        help="search page and HTTP API over an embedding store",
        description="Serve a search page (/) and a JSON API (/api, documented at /docs) over an embedding store. The "
        "store is opened read-only and re-read when `videoprism embed` adds rows; the model is loaded on the first "
        "text or video query. Needs `pip install 'videoprism[serve]'`.",
        epilog="examples:\n"
        "  videoprism serve ./store\n"
        "  videoprism serve ./store --port 9000 --host 0.0.0.0   # reachable from other machines\n\n"
        "exit codes: 0 stopped, 2 usage error (no store, web stack not installed, ...)",
        formatter_class=formatter,
    )
    serve.add_argument("store", metavar="STORE", help="store folder written by `videoprism embed`")
    serve.add_argument("--model", help="model to embed queries with (default: the one the store records)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default: 8000)")
    serve.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    serve.add_argument(
        "--dtype",
        choices=["auto", *DTYPE_NAMES],
        default="auto",
        help="weights dtype; auto (default): bfloat16 where the device computes it natively, else float32",
    )
    serve.add_argument(
        "--max-upload-mb", type=_positive_int, default=200, metavar="MB", help="largest upload (default: 200)"
    )
    serve.add_argument("--text-cache", type=int, default=1024, metavar="N", help="text query embeddings kept")
    serve.add_argument("--log-level", choices=("warning", "info"), default="warning", help="info logs each request")
    serve.set_defaults(run=_cmd_serve)

    thumbs = commands.add_parser(
        "thumbnails",
        help="write the missing poster thumbnails of a store (resumable)",
        description="Back-fill the poster thumbnails (STORE/thumbs) of a store embedded without them: one JPEG per "
        "video and per window, the middle frame of the clip the model saw. Rows that have one are skipped, so an "
        "interrupted run resumes. Safe beside a running `videoprism embed` or `videoprism serve`.",
        epilog="example:\n  videoprism thumbnails ./store --workers 4\n\n"
        "exit codes: 0 ok, 1 some videos failed to decode, 2 usage error",
        formatter_class=formatter,
    )
    thumbs.add_argument("store", metavar="STORE", help="store folder written by `videoprism embed`")
    thumbs.add_argument("--workers", type=_positive_int, default=2, help="videos decoded at a time (default: 2)")
    thumbs.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    thumbs.set_defaults(run=_cmd_thumbnails)
