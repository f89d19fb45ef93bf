"""End to end: the studio page at `/`, driven in Debian's Chromium (headless, through Playwright's
sync API with `executable_path`; Playwright's own browser download cannot work here) against
`serve run` of the embedded default.

One server for the tier. The first test makes a song from the page with the keyboard alone and
follows it to the end: bars move, waveforms draw, the player plays, a download decodes, the
library lists it, verify reports its C2PA manifest. The last one creates a managed key (which
makes the server require keys), sees the page ask for one, and revokes the key again: the server
(tests/e2e/conftest.py) is shared by the whole e2e tier.

Screenshots of each view, at desktop and phone width, go to a temporary directory, or to
$STUDIO_SCREENSHOTS_DIR when set (`STUDIO_SCREENSHOTS_DIR=docs/studio` refreshes the README's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.encode import decode_audio
from tests.e2e.conftest import LocalServer
from tests.helpers import REPO

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What Chromium needs here: root (no sandbox), no GPU, nothing reaching the network by itself,
# and media that may start without a click (the test starts playback from script).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
IDEA = "a sunny indie-pop song about sailing home"
SONG_S = 15

# Every value each take's progress bar shows, in order (the page sets `value`, which reflects
# to the attribute).
RECORD_BARS = """
window.__bars = {};
new MutationObserver((records) => {
  for (const record of records) {
    const bar = record.target;
    const row = bar.closest && bar.closest("#variation-progress [data-variation]");
    if (bar.tagName !== "PROGRESS" || !row) continue;
    (window.__bars[row.dataset.variation] ||= []).push(Number(bar.getAttribute("value")));
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["value"] });
"""

# Visible form controls with no accessible name: there should be none.
UNLABELLED = """
() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((c) => c.offsetParent !== null || c.type === "file")
  .filter((c) => c.type !== "hidden")
  .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label")
                 && !(c.tagName === "BUTTON" && c.textContent.trim()))
  .map((c) => c.outerHTML.slice(0, 120))
"""

# Share of a canvas's pixels that are drawn (not transparent).
DRAWN_SHARE = """
(canvas) => {
  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let drawn = 0;
  for (let k = 3; k < data.length; k += 4) if (data[k] > 0) drawn++;
  return drawn / (canvas.width * canvas.height);
}
"""


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("STUDIO_SCREENSHOTS_DIR")
    if not chosen:
        return tmp_path_factory.mktemp("studio-screenshots")
    directory = Path(chosen) if Path(chosen).is_absolute() else REPO / chosen
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []

    def console_error(message: Any) -> None:
        # The keys test's refused calls log their 401s, and Chromium logs the download test's
        # injected 503; nothing else may log an error.
        expected = ("status of 401", "status of 503")
        if message.type == "error" and not any(code in message.text for code in expected):
            errors.append(message.text)

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", console_error)
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def snap(page: Any, directory: Path, name: str, *, full_page: bool = True) -> None:
    """`name`-desktop.png and `name`-phone.png of the page as it is now."""
    page.screenshot(path=str(directory / f"{name}-desktop.png"), full_page=full_page)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(150)  # canvases redraw on resize
    page.screenshot(path=str(directory / f"{name}-phone.png"), full_page=full_page)
    page.set_viewport_size(DESKTOP)


def tab_to(page: Any, selector: str, presses: int = 60) -> None:
    """Press Tab until `selector` has the focus (the page is used with the keyboard alone)."""
    for _ in range(presses):
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} cannot be reached with Tab")


def test_a_song_made_from_the_page(
    local_server: LocalServer, page: Any, screenshots: Path, tmp_path: Path
) -> None:
    page.add_init_script(RECORD_BARS)
    page.goto(local_server.base_url + "/")
    # The model picker is filled from GET /v1/pools.
    page.wait_for_selector('#model option[value="sketch"]', state="attached")
    assert page.evaluate(UNLABELLED) == []

    # Describe a song with the keyboard alone, and ask for it.
    tab_to(page, "#idea")
    page.keyboard.type(IDEA)
    tab_to(page, "#duration")
    page.keyboard.press("Control+A")
    page.keyboard.type(str(SONG_S))
    assert page.input_value("#variations") == "2"
    snap(page, screenshots, "create")
    tab_to(page, "#create-submit")
    page.keyboard.press("Enter")

    # Progress: the stage, and a bar per take that moves.
    page.wait_for_selector("#view-song:not([hidden])")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#variation-progress progress')]"
        ".some((bar) => bar.value > 0)",
        timeout=120_000,
    )
    snap(page, screenshots, "progress")
    page.wait_for_selector('#song-stage[data-stage="done"]', timeout=120_000)
    song_id = page.url.rsplit("/", 1)[-1]
    assert song_id.startswith("song_"), page.url
    bars = page.evaluate("() => window.__bars")
    assert set(bars) == {"0", "1"}, bars
    for take, values in bars.items():
        assert values[-1] == 100, (take, values)
        assert any(0 < value < 100 for value in values), (take, values)  # it moved, not jumped
        assert values == sorted(values), (take, values)
    assert page.locator("#song-error").is_hidden()

    # Results: both takes, each with its waveform drawn from the peaks and a player.
    clips = page.locator(".clip")
    assert clips.count() == 2
    page.wait_for_selector(".clip:nth-child(2) canvas.waveform[data-drawn]")
    for canvas in page.locator("canvas.waveform").all():
        assert canvas.evaluate(DRAWN_SHARE) > 0.05
    first = clips.nth(0)
    facts = first.locator(".facts").inner_text()
    assert "LUFS" in facts and "sketch" in facts and f"{SONG_S}" in facts
    audio = first.locator("audio")
    assert audio.get_attribute("data-source") in ("hls", "m4a")
    audio.evaluate("(a) => { a.muted = true; return a.play(); }")
    page.wait_for_function("(a) => a.currentTime > 1.0", arg=audio.element_handle(), timeout=30_000)
    audio.evaluate("(a) => a.pause()")
    snap(page, screenshots, "results")

    # A download in each of two formats gives a file that decodes to the song. flac is made on
    # its first request; the server answers 503 + Retry-After when that outlasts its wait (30 s,
    # too long for a test), so that one answer is injected: the chip says it is encoding, asks
    # again after the Retry-After, and then downloads from the real server.
    injected = _on_first_head(
        page, "**/audio.flac*", lambda r: r.fulfill(status=503, headers={"Retry-After": "1"})
    )
    downloaded: dict[str, Path] = {}
    for fmt in ("m4a", "flac"):
        with page.expect_download() as event:
            first.locator(f'a[data-format="{fmt}"]').click()
            if fmt == "flac":
                first.locator(".download-note", has_text="Encoding the FLAC file").wait_for()
        path = tmp_path / event.value.suggested_filename
        event.value.save_as(path)
        assert path.suffix == f".{fmt}"
        samples, sample_rate = decode_audio(path.read_bytes())
        assert sample_rate == 48_000 and samples.shape[0] == 2
        assert abs(samples.shape[1] / sample_rate - SONG_S) <= 0.5, fmt
        downloaded[fmt] = path
    page.unroute("**/audio.flac*")
    assert len(injected) == 1 and first.locator(".download-note").inner_text() == ""

    # A first request the server holds while it encodes: the chip says it is preparing the
    # file. The wav's HEAD is held here until the note shows, then goes to the real server.
    held = _on_first_head(page, "**/audio.wav*", lambda route: None)
    with page.expect_download() as event:
        first.locator('a[data-format="wav"]').click()
        first.locator(".download-note", has_text="Preparing the WAV file").wait_for()
        held[0].continue_()
    page.unroute("**/audio.wav*")
    wav = decode_audio(Path(event.value.path()).read_bytes())[0]
    assert abs(wav.shape[1] / 48_000 - SONG_S) <= 0.5
    assert first.locator(".download-note").inner_text() == ""

    # Stems of the first take: the page follows the stems job on the song's event stream (the
    # server keeps it open while the job runs) and reads the stems record once at the end,
    # instead of polling it.
    seen: list[tuple[str, str]] = []
    page.on("request", lambda request: seen.append((request.method, request.url)))
    first.get_by_role("button", name="Stems").click()
    first.locator(".stems h3", has_text="Stems").wait_for(timeout=120_000)
    stems = first.locator(".stem-list li")
    assert stems.count() >= 2
    assert all(item.locator("a.chip").count() >= 1 for item in stems.all())
    stems_calls = [method for method, url in seen if re.search(r"/variations/\d+/stems$", url)]
    streams = [url for _, url in seen if url.endswith(f"/v1/songs/{song_id}/events")]
    assert stems_calls[0] == "POST" and stems_calls[1:] in ([], ["GET"]), stems_calls
    assert streams, seen
    snap(page, screenshots, "stems")

    # The library lists it, newest first, and finds it by its idea.
    page.click('nav a[data-nav="library"]')
    item = page.locator(f'li.song-item[data-song="{song_id}"]')
    item.wait_for()
    assert page.locator("li.song-item").first.get_attribute("data-song") == song_id
    assert item.locator(".badge").inner_text() == "Ready"
    assert IDEA in item.inner_text()
    snap(page, screenshots, "library")
    # The search runs on the server (GET /v1/songs?q=…), over every song, not just this page.
    page.fill("#library-search", "SAILING home")
    page.wait_for_selector("#library-status >> text=matching song")
    assert item.is_visible()
    page.fill("#library-search", "no song says this")
    page.wait_for_selector("#library-status >> text=No song matches")
    assert page.locator("li.song-item").count() == 0
    page.fill("#library-search", "")
    item.wait_for()

    # Verify: the downloaded m4a carries a valid C2PA manifest.
    page.click('nav a[data-nav="verify"]')
    page.set_input_files("#verify-file", str(downloaded["m4a"]))
    report = page.locator('.report[data-valid="true"]')
    report.wait_for()
    text = report.inner_text()
    assert "Valid content credentials" in text and "sketch" in text
    snap(page, screenshots, "verify")


def _on_first_head(page: Any, pattern: str, handle: Callable[[Any], None]) -> list[Any]:
    """Route the page's requests for `pattern`: the first HEAD goes to `handle(route)` (which
    answers it, or holds it for the test to continue later), everything else to the server.
    Returns the routes handed to `handle`."""
    handled: list[Any] = []

    def route_request(route: Any) -> None:
        if route.request.method == "HEAD" and not handled:
            handled.append(route)
            handle(route)
        else:
            route.continue_()

    page.route(pattern, route_request)
    return handled


def _keys(local_server: LocalServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`songserve keys ARGS` on the server's job store; it must succeed."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("songserve")),
            "keys",
            *args,
            "--config",
            str(local_server.config_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def managed_key(local_server: LocalServer) -> Iterator[str]:
    """A managed key, which makes the server require keys from then on; revoked afterwards, and
    the server open again (every replica notices within serve.http.auth.KEY_CACHE_S), for the
    other e2e tests that share it."""
    created = _keys(local_server, "create", "--name", "studio")
    try:
        yield created.stdout.strip().splitlines()[-1]
    finally:
        _keys(local_server, "revoke", "studio")
        deadline = time.monotonic() + 30
        while httpx.get(f"{local_server.base_url}/v1/pools").status_code != 200:
            assert time.monotonic() < deadline, "the server still requires keys"
            time.sleep(0.5)


def test_the_page_asks_for_a_key_once_the_server_needs_one(
    local_server: LocalServer, managed_key: str, page: Any, screenshots: Path
) -> None:
    """A managed key makes the server require keys (until the fixture revokes it)."""
    key = managed_key
    deadline = time.monotonic() + 30  # every replica notices within serve.http.auth.KEY_CACHE_S
    while httpx.get(f"{local_server.base_url}/v1/pools").status_code != 401:
        assert time.monotonic() < deadline, "the server never began to require keys"
        time.sleep(0.5)

    # The page and its assets need no key; nothing else comes through their path, and the API's
    # schema does not list them.
    with httpx.Client(base_url=local_server.base_url) as http:
        page_response = http.get("/")
        assert page_response.status_code == 200
        assert page_response.headers["content-type"].startswith("text/html")
        assert http.head("/").status_code == 200
        assert http.get("/studio/app.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/studio/missing.js").status_code == 404
        assert http.get("/studio/..%2F..%2Froutes%2Fstudio.py").status_code == 404
        assert http.post("/studio/app.js").status_code in (401, 405)
        paths = http.get("/openapi.json").json()["paths"]
        assert "/" not in paths and not any(path.startswith("/studio") for path in paths)

    page.goto(local_server.base_url + "/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for()
    assert page.evaluate("() => document.activeElement.id") == "key-input"
    snap(page, screenshots, "keys", full_page=False)  # a modal covers the viewport only

    page.keyboard.type("not-a-key")
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-error:not([hidden])")
    assert "not accepted" in page.inner_text("#key-error")

    page.fill("#key-input", key)
    page.keyboard.press("Enter")
    dialog.wait_for(state="hidden")
    page.wait_for_selector('#model option[value="sketch"]', state="attached")
    assert page.evaluate("() => localStorage.getItem('songserve.apiKey')") == key
    # This key's own library: empty (the first test's song belongs to the loopback owner).
    page.click('nav a[data-nav="library"]')
    page.wait_for_selector("#library-status >> text=No songs yet")
