"""The `videoprism` command line."""

from __future__ import annotations

import argparse
import json
import sys

import torch

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
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
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._flax import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as err:
        parser.error(str(err))
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"videoprism {args.command}: error: {err}", file=sys.stderr)
        return EXIT_PARTIAL


if __name__ == "__main__":
    sys.exit(main())
