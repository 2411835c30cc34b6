"""`videoprism serve`: a search page and an HTTP API over an embedding store.

Modules: `engine` (the store and the model behind the server: thread-safe, reloaded when the store changes), `app`
(the FastAPI application), `commands` (the `serve` and `thumbnails` subcommands) and `static/` (the page: plain HTML,
CSS and JS). The posters it shows are made by `videoprism.collection.thumbnails` while embedding, or back-filled by
`videoprism thumbnails`.

Importing this package imports no web framework: the FastAPI stack (``pip install videoprism[serve]``) is only needed
by `app`.
"""

from __future__ import annotations

from .commands import add_serve_commands

__all__ = ["add_serve_commands"]
