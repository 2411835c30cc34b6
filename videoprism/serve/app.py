"""The FastAPI application of `videoprism serve`: the search page at ``/``, a JSON API under ``/api`` and offline docs.

Endpoints (all answers are JSON unless said otherwise; every client mistake is a 4xx with a ``detail`` message):

* ``GET /api/search?q=TEXT&k=K&kind=all|clip|window|video``: rows most similar to a text.
* ``GET /api/search?like=ID&k=K&kind=...``: rows most similar to a stored row ("more like this"; the row is left out).
* ``POST /api/search`` (multipart ``file``, ``k``, ``kind``): rows most similar to an uploaded video.
  Hits are ``[{"rank", "score", "id", "path", "start", "end", "thumbnail"}]``, best first; ``start``/``end`` are null
  for a row covering the whole video, ``thumbnail`` is the poster's URL or null.
* ``POST /api/classify`` (multipart ``file``, ``labels`` comma-separated, ``templates``): zero-shot probabilities,
  the same JSON as ``videoprism classify --json``.
* ``GET /api/items/{id}/thumbnail``: the row's poster (JPEG). ``GET /api/items/{id}/media``: the row's video file,
  with HTTP Range support. Only files the store records are served: no path ever comes from the request.
* ``GET /api/stats``: rows, videos, kinds, failures, model and dimensions.
* ``/docs``: the OpenAPI (Swagger UI) page, its scripts served from this process (no CDN).

Uploads larger than ``max_upload`` bytes are refused with 413, from the ``Content-Length`` header when there is one
and while reading the body otherwise.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from ..errors import TextInputError
from ..store import StoreError
from ..video_io import VideoDecodeError
from .engine import ItemNotFoundError, QueryError, ServeEngine

__all__ = ["DEFAULT_MAX_UPLOAD", "MAX_K", "create_app"]

DEFAULT_MAX_UPLOAD = 200 * 1024 * 1024
MAX_K = 1000
MAX_QUERY_CHARS = 1000
MAX_LABELS = 1000
STATIC_DIR = Path(str(resources.files(__package__) / "static"))
_SUFFIX_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")

Kind = Literal["all", "clip", "window", "video"]


class UploadLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            status = 413 if length.isdigit() else 400
            detail = self._detail() if status == 413 else f"malformed Content-Length {length[:40]!r}"
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"upload too large: the limit is {self.limit} bytes (start the server with a larger --max-upload-mb)"


def _spool(upload: UploadFile, folder: str) -> str:
    """Copies an upload to a file in ``folder`` (keeping a plain suffix as a hint for the demuxer)."""
    suffix = Path(upload.filename or "").suffix
    path = os.path.join(folder, "upload" + (suffix if _SUFFIX_RE.match(suffix) else ""))
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    if os.path.getsize(path) == 0:
        raise HTTPException(400, "the uploaded file is empty; upload a video file")
    return path


def _display_name(upload: UploadFile) -> str:
    name = os.path.basename((upload.filename or "upload").replace("\\", "/"))
    return name or "upload"


@contextlib.contextmanager
def _decoding(upload: UploadFile, folder: str) -> Iterator[None]:
    """Turns a failure to decode an upload into 415, naming the upload instead of the server's temporary file."""
    try:
        yield
    except VideoDecodeError as err:
        name = _display_name(upload)
        cause = re.sub(re.escape(folder) + r"/upload[.\w]*", name, str(err))[:300]
        raise HTTPException(
            415,
            f"the uploaded file {name!r} is not a video that can be decoded ({cause}); upload a video file (mp4, "
            "webm, mov, mkv, ...)",
        ) from err


def create_app(engine: ServeEngine, *, max_upload: int = DEFAULT_MAX_UPLOAD) -> Any:
    """The application serving ``engine``'s store.

    Args:
        engine: The store and model to serve.
        max_upload: Largest accepted request body in bytes.
    """
    app = FastAPIOffline(
        title="VideoPrism search",
        description=f"Search the embedding store {engine.path} by text, by video or by example.",
        redoc_url=None,
    )
    app.state.engine = engine
    app.add_middleware(UploadLimit, limit=int(max_upload))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def error(status: int):
        def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return handler

    app.add_exception_handler(ItemNotFoundError, error(404))
    app.add_exception_handler(QueryError, error(400))
    app.add_exception_handler(TextInputError, error(400))
    app.add_exception_handler(VideoDecodeError, error(415))
    app.add_exception_handler(StoreError, error(503))

    @app.middleware("http")
    async def no_sniff(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/search", summary="Search by text (q) or by a stored item (like)")
    def search_get(
        q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description="text query")] = None,
        like: Annotated[int | None, Query(ge=0, description="id of a stored item: more like this")] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K, description="number of results")] = 10,
        kind: Annotated[Kind, Query(description="rows to search")] = "all",
    ) -> list[dict[str, Any]]:
        if (q is None or not q.strip()) == (like is None):
            raise HTTPException(400, "give either a non-empty text query q=... or like=ID, not both")
        hits = engine.search_like(like, k, kind) if like is not None else engine.search_text(q.strip(), k, kind)
        return [engine.hit_json(i, hit) for i, hit in enumerate(hits, 1)]

    @app.post("/api/search", summary="Search by an uploaded video")
    def search_post(
        file: Annotated[UploadFile, File(description="the query video")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        kind: Annotated[Kind, Form()] = "all",
    ) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="videoprism-upload-") as folder, _decoding(file, folder):
            query = engine.embed_video_file(_spool(file, folder))
        return [engine.hit_json(i, hit) for i, hit in enumerate(engine.search(query, k, kind), 1)]

    @app.post("/api/classify", summary="Zero-shot classify an uploaded video over labels")
    def classify(
        file: Annotated[UploadFile, File(description="the video to classify")],
        labels: Annotated[str, Form(description="comma-separated class names")],
        templates: Annotated[str, Form(description='"default", "ensemble" or a template with {}')] = "default",
    ) -> list[dict[str, Any]]:
        from ..zero_shot_metadata import TEMPLATE_ENSEMBLES

        names = [label.strip() for label in labels.split(",") if label.strip()]
        if len(names) > MAX_LABELS:
            raise HTTPException(400, f"{len(names)} labels; at most {MAX_LABELS} per request")
        if templates not in TEMPLATE_ENSEMBLES and "{}" not in templates:
            raise HTTPException(
                400, f"templates {templates[:80]!r} is neither {', '.join(TEMPLATE_ENSEMBLES)} nor a template with {{}}"
            )
        with tempfile.TemporaryDirectory(prefix="videoprism-upload-") as folder, _decoding(file, folder):
            path = _spool(file, folder)
            ranked = engine.classify(path, names, templates)
        return [{"video": _display_name(file), "labels": [{"label": n, "probability": p} for n, p in ranked]}]

    @app.get(
        "/api/items/{item_id}/thumbnail",
        summary="The item's poster",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such item or no poster"}},
    )
    def thumbnail(item_id: int) -> FileResponse:
        path = engine.thumbnail_file(engine.item(item_id))
        if path is None:
            raise HTTPException(404, f"item {item_id} has no thumbnail; `videoprism thumbnails STORE` makes them")
        return FileResponse(path, media_type="image/jpeg")

    @app.get(
        "/api/items/{item_id}/media",
        summary="The item's video file (HTTP Range supported)",
        response_class=FileResponse,
        responses={200: {"content": {"video/*": {}}}, 206: {"description": "partial content"}},
    )
    def media(item_id: int) -> FileResponse:
        path = engine.media_file(item_id)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type)

    for path, endpoint in (("/api/items/{item_id}/thumbnail", thumbnail), ("/api/items/{item_id}/media", media)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.get("/api/stats", summary="Rows, videos, model, dimensions and failures of the store")
    def stats() -> dict[str, Any]:
        return engine.stats()

    return app
