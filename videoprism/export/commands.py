"""The `videoprism export` subcommand (registered by `add_export_command`; torch loads only when it runs)."""

from __future__ import annotations

import argparse

DEFAULT_OPSET = 18
MANIFEST_NAME = "export_manifest.json"


def _run_export_command(args: argparse.Namespace) -> int:
    from .towers import export_model

    manifest = export_model(
        args.source,
        args.out_dir,
        format=args.format,
        tower=args.tower,
        dtype=args.dtype,
        num_frames=args.num_frames,
        size=args.size,
        text_length=args.text_length,
        opset=args.opset,
        overwrite=args.overwrite,
        config=args.config,
    )
    for entry in manifest["files"]:
        outputs = ", ".join(o["name"] for o in entry["outputs"])
        print(f"wrote {entry['file']} ({entry['tower']} tower -> {outputs})")
    print(f"wrote {MANIFEST_NAME} and the processor files to {str(args.out_dir)!r}")
    return 0


def add_export_command(subparsers) -> argparse.ArgumentParser:
    """Registers `videoprism export MODEL OUT_DIR ...` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "export",
        help="export the video / text towers as ONNX or torch.export files (dynamic batch)",
        description="Export a checkpoint's towers for deployment, one file per tower, with the processor settings, "
        f"the tokenizer and {MANIFEST_NAME} beside them. The frame count, frame size and text length are fixed "
        "at export time; the batch stays dynamic. See docs/deploy.md.",
        epilog="examples:\n"
        "  videoprism export google/videoprism-lvt-base-f16r288 ./lvt-onnx\n"
        "  videoprism export ./my-model ./vision-pt2 --format torch-export --tower vision --num-frames 8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="MODEL", help="preset name, hub repo id, local folder, .npz or .safetensors")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (new or empty unless --overwrite)")
    parser.add_argument("--format", default="onnx", help="onnx (default) or torch-export")
    parser.add_argument("--tower", default="all", help="vision, video, text or all (default: every tower it has)")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the model's)")
    parser.add_argument("--size", type=int, help="frame side in pixels (default: the model's)")
    parser.add_argument("--text-length", type=int, help="tokens per text (default: the tokenizer's, 64)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR")
    parser.add_argument("--config", help="preset name when the source carries no config")
    parser.set_defaults(run=_run_export_command)
    return parser
