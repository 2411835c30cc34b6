"""Export of the video and text towers for deployment: ONNX and torch.export files, one per tower (`export_model`).

Modules: `towers` (the tower wrappers, tracing, the ONNX / torch.export writers, the manifest) and `commands` (the
`videoprism export` subcommand). Importing this package loads no torch; `export_model` loads `towers` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .commands import DEFAULT_OPSET, MANIFEST_NAME, add_export_command


def __getattr__(name: str) -> Any:
    towers = importlib.import_module(".towers", __name__)
    try:
        return getattr(towers, name)
    except AttributeError:
        raise AttributeError(f"module 'videoprism.export' has no attribute {name!r}") from None


__all__ = ["DEFAULT_OPSET", "MANIFEST_NAME", "add_export_command", "export_model"]
