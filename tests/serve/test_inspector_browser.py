"""The review inspector in a real browser: Debian's chromium driven by Playwright (system browser).

A real server on loopback ports with the tiny trained model (it has a step graph); the page is
loaded from it, a review typed and submitted, and the DOM checked against sentiment.v1 Explain
over gRPC: the label, one highlighted sentence per sentence, the turning point marked in the
text and on the chart. Each run leaves a screenshot and the page's first-render timings under
pytest's tmp_path (docs/images/inspector.png is one such screenshot). Skips, saying why, where
/usr/bin/chromium (Debian's ``chromium``; .ci/run installs it best-effort) or Playwright is absent.
Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.serve.test_explain import TURNING

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 60_000
TOKEN = "inspector-browser-token-9876543210"

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (dev extra)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run the browser "
                "test", allow_module_level=True)


@pytest.fixture(scope="module")
def explaining(trained_repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(trained_repository, max_explain_sentences=20))
    yield running
    running.close()


@pytest.fixture(scope="module")
def guarded(trained_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    token_file = tmp_path_factory.mktemp("tokens") / "tokens"
    token_file.write_text(TOKEN + "\n")
    running = ServerThread(make_settings(trained_repository, auth_token_file=token_file))
    yield running
    running.close()


class Browser:
    """One fresh chromium profile; records every request the page makes and every console error."""

    def __init__(self, playwright, profile: Path, width: int, height: int) -> None:
        self.context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": width, "height": height}, service_workers="block")
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        opened = Browser(playwright, tmp_path / "profile", 1000, 900)
        try:
            yield opened
        finally:
            opened.close()


def grpc_explain(server: ServerThread, text: str) -> pb.ExplainResponse:
    return pb_grpc.SentimentServiceStub(server.channel).Explain(pb.ExplainRequest(text=text), timeout=60)


def poll(page, expression: str) -> None:
    """Wait until ``expression`` is true in the page (bounded). Playwright's wait_for_function would
    evaluate a string in the page, which the page's CSP (rightly) forbids; evaluate() is not subject to it."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {TIMEOUT_MS} ms: {expression}"
        page.wait_for_timeout(20)


def first_render(page) -> dict[str, float]:
    """Milliseconds from navigation start: first contentful paint, DOMContentLoaded, load (Navigation/Paint Timing)."""
    return page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const paint = performance.getEntriesByName('first-contentful-paint')[0];
        return {first_contentful_paint_ms: paint ? paint.startTime : null,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd,
                transfer_bytes: performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize,
                                                                                nav.transferSize)};
    }""")


def wait_for_answer(page) -> None:
    page.wait_for_selector("#chart polyline.line", state="attached")
    page.wait_for_selector("#answer", state="visible")
    page.wait_for_selector("#result[aria-busy='false']", state="attached")


def test_a_typed_review_is_drawn_with_its_turning_point(explaining: ServerThread, browser: Browser,
                                                        tmp_path: Path) -> None:
    page, base = browser.page, explaining.http_url
    page.goto(base + "/", wait_until="load")
    poll(page, "performance.getEntriesByName('first-contentful-paint').length > 0")
    timings = first_render(page)
    (tmp_path / "first_render.json").write_text(json.dumps(timings))
    print(f"inspector first render: {timings}")

    page.locator("#review").press_sequentially(TURNING)
    page.keyboard.press("Control+Enter")  # keyboard only: submit from the text box
    wait_for_answer(page)

    expected = grpc_explain(explaining, TURNING)
    assert page.inner_text("#label").lower() == expected.prediction.label == "negative"
    assert float(page.inner_text("#probability")) == pytest.approx(expected.prediction.probability, abs=5e-4)
    sentences = page.locator("#text .sentence")
    assert sentences.count() == len(expected.sentences) == 4
    for i, s in enumerate(expected.sentences):
        item = sentences.nth(i)
        assert s.text in item.inner_text()
        assert ("pos" if s.effect >= 0 else "neg") in item.get_attribute("class").split()
        assert item.evaluate("e => getComputedStyle(e).backgroundColor") not in ("", "rgba(0, 0, 0, 0)")
    turning = page.locator("#text .sentence.turning")
    assert turning.count() == 1 and turning.get_attribute("data-index") == str(expected.turning_point) == "3"
    marker = page.locator("#chart .turning-marker")
    assert marker.count() == 1 and marker.get_attribute("data-sentence") == "3"
    assert page.locator("#chart .point").count() == len([s for s in expected.sentences if s.tokens_read])
    assert page.locator("#chart .line").get_attribute("points").count(",") == 4
    assert "sentence 4" in page.inner_text("#turning") and "Turning point" in page.inner_text("#turning")
    assert "turning point at sentence 4" in page.locator("#chart-desc").text_content()
    assert page.get_attribute("#result", "aria-live") == "polite"

    page.screenshot(path=str(tmp_path / "inspector.png"), full_page=True)
    assert (tmp_path / "inspector.png").stat().st_size > 10_000
    assert all(url.startswith(base + "/") for url in browser.requests), browser.requests
    assert browser.errors == []


def test_an_example_on_a_phone_width_screen(explaining: ServerThread, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        phone = Browser(playwright, tmp_path / "profile", 360, 740)
        try:
            page = phone.page
            page.goto(explaining.http_url + "/", wait_until="load")
            page.select_option("#example", index=1)
            text = page.input_value("#review")
            assert text.strip()
            page.click("#submit")
            wait_for_answer(page)
            assert page.locator("#text .sentence").count() == len(grpc_explain(explaining, text).sentences)
            # nothing wider than the screen: no sideways scrolling on a phone
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            assert page.evaluate("document.getElementById('chart').getBoundingClientRect().width") <= 360
            page.screenshot(path=str(tmp_path / "inspector-phone.png"), full_page=True)
            # an empty review is refused in the page, with the reason announced
            page.fill("#review", "   ")
            page.click("#submit")
            page.wait_for_selector("#error", state="visible")
            assert "review" in page.inner_text("#error").lower()
            assert phone.errors == []
        finally:
            phone.close()


def test_with_a_token_the_page_asks_for_it_and_keeps_it_for_the_tab_only(guarded: ServerThread,
                                                                          browser: Browser) -> None:
    page = browser.page
    page.goto(guarded.http_url + "/", wait_until="load")  # the page itself needs no token
    page.fill("#review", TURNING)
    page.click("#submit")
    page.wait_for_selector("#error", state="visible")
    assert "HTTP 401" in page.inner_text("#error")
    assert page.evaluate("document.getElementById('token-box').open")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(TOKEN)
    page.check("#remember")
    page.click("#submit")
    wait_for_answer(page)
    assert page.is_hidden("#error")
    assert page.locator("#text .sentence.turning").count() == 1
    assert page.evaluate("sessionStorage.getItem('inspector.token')") == TOKEN
    assert page.evaluate("localStorage.length") == 0
    page.reload(wait_until="load")
    assert page.input_value("#token") == TOKEN
    page.fill("#review", TURNING)
    page.uncheck("#remember")
    page.click("#submit")
    wait_for_answer(page)
    assert page.evaluate("sessionStorage.getItem('inspector.token')") is None
    # The 401 is the one console error expected: Chromium logs every failed fetch.
    assert [e for e in browser.errors if "401" not in e] == []

