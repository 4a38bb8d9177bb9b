"""The HTML status page in a real browser (headless Chromium): it draws, with its style sheet allowed by the
page's own Content-Security-Policy, and it requests nothing, not even what an escaping mistake would put in.

Slow (a browser start each, and the README walkthrough once); skipped without ``chromium`` (CONTRIBUTING.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.render.report import page
from tests.helpers.browser import chromium_path, pixels, screenshot, walkthrough_report

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (CONTRIBUTING.md)"),
]

UPDATED_GREEN = bytes.fromhex("2e7d32")  # --updated in render/report.py's style sheet


class Counter:
    """A loopback HTTP server that counts the requests it is sent."""

    def __init__(self) -> None:
        counter = self
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                counter.paths.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def counter() -> Iterator[Counter]:
    server = Counter()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def colours(png: Path) -> set[bytes]:
    width, _, rows = pixels(png)
    step = len(rows[0]) // width
    return {row[i : i + 3] for row in rows for i in range(0, len(row), step)}


def test_the_walkthrough_report_draws_and_requests_nothing(tmp_path):
    report = walkthrough_report(tmp_path)
    png = tmp_path / "report.png"
    assert screenshot(report, png, 412, 900) == []  # a phone's width
    seen = colours(png)
    assert len(seen) > 8  # not blank: text, badges, bars
    assert UPDATED_GREEN in seen  # the bars have their colours: the style sheet passed the policy by its hash


def test_a_request_the_page_makes_is_caught(tmp_path, counter):
    """The check can fail: a page without the policy that loads an image from loopback."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text(f'<!DOCTYPE html><p>report</p><img src="{counter.url}/pixel.png">')
    assert screenshot(leaky, tmp_path / "leaky.png", 400, 300) == [f"{counter.url}/pixel.png"]
    assert counter.paths == ["/pixel.png"]


def test_the_policy_blocks_what_an_escaping_mistake_would_let_in(tmp_path, counter):
    """Defence in depth: an image, a style sheet and a frame slipped into the page are never requested."""
    status = {
        "format_version": "1.0",
        "factory": "demo",
        "backend": "local:x",
        "now": "2026-11-23T12:00:00Z",
        "waves": [],
    }
    slipped = (
        f'<img src="{counter.url}/img"><link rel="stylesheet" href="{counter.url}/css">'
        f'<iframe src="{counter.url}/frame"></iframe><p>after</p>'
    )
    hostile = tmp_path / "hostile.html"
    hostile.write_text(page(status).replace("<main>", "<main>" + slipped))
    assert screenshot(hostile, tmp_path / "hostile.png", 400, 300) == []
    assert counter.paths == []
