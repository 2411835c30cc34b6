"""The HTTP API of `videoprism serve`, in process (FastAPI's TestClient): every endpoint and every 4xx answer."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _shapes import build_store, make_shape_videos
from fastapi.testclient import TestClient
from PIL import Image

from videoprism.collection import classify_video_files, embed_videos, search_text, search_video
from videoprism.serve.app import create_app
from videoprism.serve.engine import ServeEngine
from videoprism.store import open_store

LABELS = ["a red square", "a yellow disc", "a white bar"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("serve-api")
    model, store = build_store(root, count=4)
    (root / "not_a_video.mp4").write_text("plain text, not a video\n")
    embed_videos([root / "not_a_video.mp4"], store, model, window=2.0, workers=0, progress=False)
    engine = ServeEngine(store)
    client = TestClient(create_app(engine), raise_server_exceptions=False)
    reader = open_store(store)
    return SimpleNamespace(root=root, model=model, store=store, engine=engine, client=client, reader=reader)


def hits_of(client: TestClient, url: str, **kwargs: object) -> list[dict]:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_hits(api: list[dict], expected: list, store: Path) -> None:
    assert [h["id"] for h in api] == [h.id for h in expected]
    np.testing.assert_allclose([h["score"] for h in api], [h.score for h in expected], rtol=0, atol=1e-5)
    assert [h["rank"] for h in api] == list(range(1, len(api) + 1))
    for hit, ref in zip(api, expected, strict=True):
        assert hit["path"] == ref.metadata["path"]
        if ref.metadata["kind"] == "window":
            assert (hit["start"], hit["end"]) == (ref.metadata["start"], ref.metadata["end"])
        else:
            assert hit["start"] is None and hit["end"] is None
        assert hit["thumbnail"] == f"/api/items/{hit['id']}/thumbnail"


# ----------------------------------------------------------------------------------------------------------------
# Answers


def test_stats(served: SimpleNamespace) -> None:
    stats = hits_of(served.client, "/api/stats")
    assert stats["rows"] == 12 and stats["videos"] == 4 and stats["kinds"] == {"window": 8, "video": 4}
    assert stats["failures"] == 1 and stats["dimensions"] == 32
    assert stats["model"] == str(served.model) == stats["query_model"]


def test_text_search_matches_the_library(served: SimpleNamespace) -> None:
    for query, kind in (("a red square moving right", "all"), ("a yellow disc", "window"), ("a white bar", "video")):
        api = hits_of(served.client, "/api/search", params={"q": query, "k": 5, "kind": kind})
        ref = search_text(served.store, query, 5, kind=None if kind == "all" else kind, device="cpu")
        assert len(api) == (4 if kind == "video" else 5)  # 4 videos
        assert_same_hits(api, ref, served.store)
        assert all((h["start"] is None) == (kind == "video") for h in api if kind != "all")
    again = hits_of(served.client, "/api/search", params={"q": "a red square moving right", "k": 5})
    assert again == hits_of(served.client, "/api/search", params={"q": "a red square moving right", "k": 5})


def test_more_like_this_leaves_the_item_out(served: SimpleNamespace) -> None:
    item = int(served.reader.ids[3])
    api = hits_of(served.client, "/api/search", params={"like": item, "k": 4})
    row = int(np.searchsorted(served.reader.ids, item))
    ref = served.reader.search(np.asarray(served.reader.embeddings[row], np.float32), 5)
    assert ref[0].id == item and pytest.approx(ref[0].score, abs=1e-3) == 1.0
    assert_same_hits(api, ref[1:], served.store)


def test_search_by_uploaded_video_matches_the_library(served: SimpleNamespace) -> None:
    query = sorted((served.root / "videos").glob("*.mp4"))[1]
    with open(query, "rb") as f:
        response = served.client.post("/api/search", files={"file": ("q.mp4", f, "video/mp4")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    assert_same_hits(response.json(), search_video(served.store, query, 3, device="cpu"), served.store)
    assert response.json()[0]["path"] == str(query)  # the video itself (or one of its windows) comes first


def test_classify_matches_the_cli_json(served: SimpleNamespace) -> None:
    video = sorted((served.root / "videos").glob("*.mp4"))[0]
    with open(video, "rb") as f:
        response = served.client.post(
            "/api/classify", files={"file": (video.name, f, "video/mp4")}, data={"labels": " , ".join(LABELS)}
        )
    assert response.status_code == 200, response.text
    [result] = response.json()
    [ref] = classify_video_files([video], LABELS, served.model, device="cpu", workers=0)
    assert result["video"] == video.name
    assert [x["label"] for x in result["labels"]] == [label for label, _ in ref.labels]
    np.testing.assert_allclose([x["probability"] for x in result["labels"]], [p for _, p in ref.labels], atol=1e-5)
    assert sum(x["probability"] for x in result["labels"]) == pytest.approx(1.0)


def test_thumbnail_is_the_stored_poster(served: SimpleNamespace) -> None:
    from videoprism.collection.thumbnails import thumbnail_key, thumbnail_path

    for row in served.reader.metadata.to_pylist()[:3]:
        response = served.client.get(f"/api/items/{row['id']}/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        key = thumbnail_key(row["path"], row["kind"], row["start"], row["end"])
        assert response.content == thumbnail_path(served.store, key).read_bytes()
        assert Image.open(io.BytesIO(response.content)).size == (160, 107)


def test_media_serves_the_video_with_ranges(served: SimpleNamespace) -> None:
    row = served.reader.row(0)
    data = Path(row["path"]).read_bytes()
    whole = served.client.get(f"/api/items/{row['id']}/media")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = served.client.get(f"/api/items/{row['id']}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = served.client.get(f"/api/items/{row['id']}/media", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    beyond = served.client.get(f"/api/items/{row['id']}/media", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416
    head = served.client.head(f"/api/items/{row['id']}/media")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)


def test_page_and_offline_docs(served: SimpleNamespace) -> None:
    page = served.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/style.css", "data:,"]
    docs = served.client.get("/docs")
    assert docs.status_code == 200
    docs_assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert docs_assets and all(url.startswith("/") for url in docs_assets), docs_assets
    assert "http://" not in docs.text and "https://" not in docs.text
    for url in [a for a in assets if a.startswith("/")] + docs_assets:
        assert served.client.get(url).status_code == 200, url
    spec = served.client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/api/search", "/api/classify", "/api/items/{item_id}/thumbnail", "/api/items/{item_id}/media", "/api/stats"
    }  # fmt: skip
    assert set(spec["paths"]["/api/search"]) == {"get", "post"}


# ----------------------------------------------------------------------------------------------------------------
# Client mistakes: 4xx with a message, never 500


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/api/search", 400, "give either a non-empty text query"),
        ("/api/search?q=%20%20", 400, "give either a non-empty text query"),
        ("/api/search?q=cat&like=1", 400, "not both"),
        ("/api/search?q=cat&k=0", 422, "greater than or equal to 1"),
        ("/api/search?q=cat&k=1001", 422, "less than or equal to 1000"),
        ("/api/search?q=cat&k=ten", 422, "valid integer"),
        ("/api/search?q=cat&kind=frames", 422, "'all', 'clip', 'window' or 'video'"),
        ("/api/search?q=" + "x" * 1001, 422, "at most 1000 characters"),
        ("/api/search?like=-1", 422, "greater than or equal to 0"),
        ("/api/search?like=123456", 404, "no item 123456"),
        ("/api/items/123456/thumbnail", 404, "no item 123456"),
        ("/api/items/123456/media", 404, "no item 123456"),
        ("/api/items/abc/media", 422, "valid integer"),
        ("/api/items/1.5/thumbnail", 422, "valid integer"),
        ("/api/items/..%2F..%2Fetc%2Fpasswd/media", 404, "Not Found"),
        ("/api/items/%2e%2e/media", 422, "valid integer"),
        ("/static/..%2F..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
        ("/static/%2e%2e/%2e%2e/serve/app.py", 404, "Not Found"),
        ("/nothing-here", 404, "Not Found"),
    ],
)
def test_bad_requests(served: SimpleNamespace, url: str, status: int, message: str) -> None:
    response = served.client.get(url)
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json())


def upload(client: TestClient, url: str, content: bytes, name: str = "clip.mp4", **data: str):
    return client.post(url, files={"file": (name, content, "video/mp4")}, data=data)


def test_bad_uploads(served: SimpleNamespace) -> None:
    client = served.client
    video = sorted((served.root / "videos").glob("*.mp4"))[0].read_bytes()
    text = upload(client, "/api/search", b"hello, I am not a video\n" * 10, name="notes.txt")
    assert text.status_code == 415 and "'notes.txt' is not a video" in text.json()["detail"]
    assert "videoprism-upload" not in text.json()["detail"]  # the server's temporary file is not shown
    truncated = upload(client, "/api/classify", video[:300], labels="a,b")
    assert truncated.status_code == 415
    empty = upload(client, "/api/search", b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    assert client.post("/api/search", data={"k": "3"}).status_code == 422  # no file
    assert upload(client, "/api/search", video, k="0").status_code == 422
    assert upload(client, "/api/search", video, kind="frames").status_code == 422
    no_labels = client.post("/api/classify", files={"file": ("v.mp4", video, "video/mp4")})
    assert no_labels.status_code == 422
    one = upload(client, "/api/classify", video, labels="only one, ")
    assert one.status_code == 400 and "at least two labels" in one.json()["detail"]
    twice = upload(client, "/api/classify", video, labels="cat,dog,cat")
    assert twice.status_code == 400 and "labels repeat: ['cat']" in twice.json()["detail"]
    template = upload(client, "/api/classify", video, labels="cat,dog", templates="no placeholder")
    assert template.status_code == 400 and "template with {}" in template.json()["detail"]
    garbled = client.post(
        "/api/search",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert 400 <= garbled.status_code < 500
    wrong_type = client.post("/api/search", json={"file": "x"})
    assert wrong_type.status_code == 422


def test_upload_limit(served: SimpleNamespace) -> None:
    client = TestClient(create_app(served.engine, max_upload=4096), raise_server_exceptions=False)
    big = upload(client, "/api/search", b"\0" * 10_000)
    assert big.status_code == 413 and "limit is 4096 bytes" in big.json()["detail"]

    def chunks():  # no Content-Length: counted while the body is read
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
        for _ in range(10):
            yield b"\0" * 1000

    streamed = client.post(
        "/api/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert streamed.status_code == 413
    bogus = client.post("/api/search", content=b"x", headers={"Content-Length": "abc"})
    assert bogus.status_code in (400, 413)
    small = hits_of(client, "/api/search", params={"q": "a red square", "k": 2})
    assert len(small) == 2


def test_video_only_model_and_missing_files(tmp_path: Path, served: SimpleNamespace) -> None:
    from videoprism import VideoPrismClipModel

    # The store's videos moved away: their media is gone (404), their thumbnails stay.
    videos = make_shape_videos(tmp_path / "videos", 2)
    store = tmp_path / "store"
    embed_videos(videos, store, served.model, workers=0, progress=False)
    video_only = tmp_path / "video-only"
    VideoPrismClipModel.from_pretrained(served.model).video_model.save_pretrained(video_only)
    client = TestClient(create_app(ServeEngine(store, video_only)), raise_server_exceptions=False)
    videos[0].unlink()
    first = open_store(store).row(0)
    assert first["path"] == str(videos[0])
    gone = client.get(f"/api/items/{first['id']}/media")
    assert gone.status_code == 404 and "no longer at" in gone.json()["detail"]
    assert client.get(f"/api/items/{first['id']}/thumbnail").status_code == 200
    text = client.get("/api/search", params={"q": "a red square"})
    assert text.status_code == 400 and "no text tower" in text.json()["detail"]
    assert len(hits_of(client, "/api/search", params={"like": first["id"], "k": 5})) == 1


def test_missing_thumbnail_is_null_and_404(tmp_path: Path, served: SimpleNamespace) -> None:
    videos = make_shape_videos(tmp_path / "videos", 2)
    store = tmp_path / "store"
    embed_videos(videos, store, served.model, workers=0, progress=False, thumbnails=False)
    client = TestClient(create_app(ServeEngine(store)), raise_server_exceptions=False)
    hits = hits_of(client, "/api/search", params={"q": "a disc", "k": 2})
    assert len(hits) == 2 and all(h["thumbnail"] is None for h in hits)
    missing = client.get(f"/api/items/{hits[0]['id']}/thumbnail")
    assert missing.status_code == 404 and "videoprism thumbnails" in missing.json()["detail"]


# ----------------------------------------------------------------------------------------------------------------
# Serving while `embed` adds rows


def test_new_rows_appear_while_embedding(tmp_path: Path, served: SimpleNamespace) -> None:
    videos = make_shape_videos(tmp_path / "videos", 6)
    store = tmp_path / "store"
    embed_videos(videos[:2], store, served.model, window=2.0, workers=0, progress=False)
    client = TestClient(create_app(ServeEngine(store)), raise_server_exceptions=False)
    assert hits_of(client, "/api/stats")["rows"] == 6
    statuses: list[int] = []
    stop = threading.Event()

    def query_loop() -> None:  # searches while the writer commits batches and compacts
        for i in range(400):
            if stop.is_set():
                return
            r = client.get("/api/search", params={"like": i % 6, "k": 3})
            statuses.append(r.status_code)

    thread = threading.Thread(target=query_loop)
    thread.start()
    try:
        embed_videos(
            videos[2:4], store, served.model, window=2.0, workers=0, batch_size=1, progress=False, compact=False
        )
        grown = hits_of(client, "/api/stats")
        assert grown["rows"] == 12 and grown["videos"] == 4
        embed_videos(videos[:6], store, served.model, window=2.0, workers=0, batch_size=2, progress=False)
    finally:
        stop.set()
        thread.join()
    assert statuses and set(statuses) <= {200}
    assert hits_of(client, "/api/stats")["rows"] == 18
    newest = int(open_store(store).ids.max())
    found = hits_of(client, "/api/search", params={"like": newest, "k": 17})
    assert len(found) == 17 and {h["path"] for h in found} == {str(v) for v in videos}


def test_serve_command_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "videoprism.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    missing = run("serve", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no embedding store" in missing.stderr
    port = run("serve", str(tmp_path), "--port", "70000")
    assert port.returncode == 2 and "expected a TCP port 1-65535, got '70000'" in port.stderr
