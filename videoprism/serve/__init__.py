"""`videoprism serve`: a search page and an HTTP API over an embedding store, and the store's poster thumbnails.

Modules: `thumbnails` (poster JPEGs: made while embedding, back-filled by `videoprism thumbnails`), `engine` (the
store and the model behind the server: thread-safe, reloaded when the store changes), `app` (the FastAPI
application), `commands` (the `serve` and `thumbnails` subcommands) and `static/` (the page: plain HTML, CSS and JS).

Importing this package imports no web framework: `thumbnails` runs inside the embedding workers, and the FastAPI
stack (``pip install videoprism[serve]``) is only needed by `app`.
"""

from __future__ import annotations

from .commands import add_serve_commands
from .thumbnails import THUMBS_DIR, backfill_thumbnails, poster_jpeg, thumbnail_key, thumbnail_path

__all__ = ["THUMBS_DIR", "add_serve_commands", "backfill_thumbnails", "poster_jpeg", "thumbnail_key", "thumbnail_path"]
