"""`videoprism serve` as a person uses it: the real command in a subprocess, the page driven in headless Chromium.

Chromium is Debian's (`apt-get install chromium`, done by .ci/run), driven by the `playwright` package; every request
the browser makes to anything but the server is refused, so the page and the docs are checked to work offline.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from _shapes import build_store
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000  # upper bound for the page to react (a loaded CI machine); the checks are on state, not on time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("serve-browser")
    model, store = build_store(root)
    port = free_port()
    log = open(root / "serve.log", "w+")  # noqa: SIM115 - closed below, after the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoprism.cli", "serve", str(store), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # at most 5 minutes for the interpreter, torch and the store to load
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"videoprism serve exited with {proc.returncode}: {log.read()}")
            try:
                if httpx.get(f"{url}/api/stats", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("videoprism serve did not answer")
        log.seek(0)
        yield SimpleNamespace(root=root, model=model, store=store, url=url, startup=log.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(server: SimpleNamespace):
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server: SimpleNamespace):
    """A page that may only talk to the server; outside requests and script errors are collected (and must not
    happen)."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.outside, page.errors = [], []

    def route(r):
        if r.request.url.startswith(server.url) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            page.outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    yield page
    assert page.outside == [] and page.errors == []
    context.close()


def search(page: Page, server: SimpleNamespace, text: str, images: int = 1000) -> None:
    """Searches from the page and waits for the first ``images`` thumbnails (lazy: those near the view) to load."""
    page.goto(server.url + "/")
    page.fill("#query", text)
    page.press("#query", "Enter")
    page.wait_for_selector(".card")
    page.wait_for_function(
        "n => { const imgs = [...document.querySelectorAll('.card img')].slice(0, n);"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) }",
        arg=images,
    )


def video_state(page: Page) -> dict:
    return page.evaluate(
        "() => { const v = document.getElementById('video');"
        " return {id: v.dataset.id, time: v.currentTime, paused: v.paused, error: v.error && v.error.code} }"
    )


def test_startup_says_local_only(server: SimpleNamespace) -> None:
    assert f"at {server.url}/" in server.startup
    assert "listening on 127.0.0.1 only" in server.startup


def test_search_shows_thumbnails_and_plays_the_window(page: Page, server: SimpleNamespace, tmp_path: Path) -> None:
    search(page, server, "a red square moving")
    cards = page.locator(".card")
    assert cards.count() == 18  # 6 videos x (2 windows + the whole video); 24 asked
    assert "18 rows from 6 videos" in page.inner_text("#stats")
    api = httpx.get(f"{server.url}/api/search", params={"q": "a red square moving", "k": 24}).json()
    assert [int(x) for x in cards.evaluate_all("cs => cs.map(c => c.dataset.id)")] == [h["id"] for h in api]
    widths = page.eval_on_selector_all(".card img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 18 and min(widths) == 160

    later = next(h for h in api if h["start"] == 2.0)  # a window that starts 2 s into its video
    page.click(f'.card[data-id="{later["id"]}"]')
    page.wait_for_function(
        "id => { const v = document.getElementById('video');"
        " return v.dataset.id === String(id) && v.readyState >= 2 && v.currentTime >= 2.0 && v.currentTime > 0 }",
        arg=later["id"],
    )
    state = video_state(page)
    assert state["error"] is None and state["time"] >= later["start"]
    assert "2.0–4.0 s" in page.inner_text("#now-playing")

    first = next(h for h in api if h["start"] == 0.0)  # plays 0-2 s, then stops at the window's end
    page.click(f'.card[data-id="{first["id"]}"]')
    page.wait_for_function(
        "id => { const v = document.getElementById('video');"
        " return v.dataset.id === String(id) && v.paused && v.currentTime > 1.5 }",
        arg=first["id"],
    )
    state = video_state(page)
    assert 1.5 < state["time"] < 3.5, state  # stopped near 2.0 s, before the video's end (4.0 s)
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=False)
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def test_keyboard_only(page: Page, server: SimpleNamespace) -> None:
    search(page, server, "a white bar")
    for _ in range(40):  # Tab from the search box to the first result card
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.classList.contains('card')"):
            break
    focused = page.evaluate("() => document.activeElement.dataset.id")
    assert focused == page.locator(".card").first.get_attribute("data-id")
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.getElementById('video').dataset.id === id", arg=focused)
    page.keyboard.press("Tab")  # the card's "More like this" button
    assert page.evaluate("() => document.activeElement.className") == "like"
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('results for items like')")
    ids = page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")
    assert focused not in ids and len(ids) == 17
    labels = page.evaluate("() => [...document.querySelectorAll('input, select')].map(i => i.labels.length)")
    assert labels and all(n == 1 for n in labels)  # every input has a label


def test_query_and_classify_with_a_video(page: Page, server: SimpleNamespace) -> None:
    video = server.root / "videos" / "yellow_disc_on_green.mp4"
    page.goto(server.url + "/")
    page.set_input_files("#video-file", str(video))
    page.click("#video-search")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('the video yellow_disc')")
    assert page.locator(".card .name").first.inner_text() == video.name
    page.fill("#labels", "a red square, a yellow disc, a white bar")
    page.click("#video-classify")
    page.wait_for_selector("#classes li")
    rows = page.locator("#classes li").all_inner_texts()
    assert len(rows) == 3 and {r.split(":")[0] for r in rows} == {"a red square", "a yellow disc", "a white bar"}
    total = sum(float(r.rsplit(" ", 1)[1].rstrip("%")) for r in rows)
    assert abs(total - 100) < 0.5

    # Drop a video on the page (a File made from one of the store's videos): with no labels typed, it searches.
    page.fill("#labels", "")
    page.evaluate(
        """async (url) => {
            const blob = await (await fetch(url)).blob();
            const data = new DataTransfer();
            data.items.add(new File([blob], "dropped.mp4", {type: "video/mp4"}));
            document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        f"/api/items/{page.locator('.card').first.get_attribute('data-id')}/media",
    )
    page.wait_for_function("() => document.getElementById('status').textContent.includes('the video dropped.mp4')")
    assert page.locator(".card").count() == 18


def test_phone_width(browser, server: SimpleNamespace, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    search(page, server, "a purple disc", images=4)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    boxes = [page.locator(".card").nth(i).bounding_box() for i in range(4)]
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 375 for b in boxes)
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[2]["y"] > boxes[0]["y"]  # two columns
    page.screenshot(path=str(tmp_path / "phone.png"))
    context.close()


def test_docs_work_offline(page: Page, server: SimpleNamespace) -> None:
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock")
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/search", "/api/classify", "/api/stats", "/api/items/{item_id}/media"} <= set(summaries)


def test_sixteen_concurrent_searches(server: SimpleNamespace) -> None:
    colours, shapes = ("red", "yellow", "white", "cyan"), ("square", "disc", "bar")
    queries = [f"a {c} {s}, seen from above" for c in colours for s in shapes]
    params = [{"q": q, "k": 5} for q in queries] + [{"like": i, "k": 5} for i in range(4)]
    results: list = [None] * len(params)
    start = threading.Barrier(len(params))

    def client(i: int) -> None:
        start.wait()
        response = httpx.get(f"{server.url}/api/search", params=params[i], timeout=120)
        results[i] = (response.status_code, response.json())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(params))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The same queries one at a time (texts were new to the server above: embedded concurrently; cached now).
    expected = [httpx.get(f"{server.url}/api/search", params=p, timeout=120).json() for p in params]
    assert len({tuple(h["id"] for h in e) for e in expected}) > 1
    for (status, got), want in zip(results, expected, strict=True):
        assert status == 200
        assert [h["id"] for h in got] == [h["id"] for h in want]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-6)
