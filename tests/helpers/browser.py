"""A page in headless Chromium: its screenshot, the requests it made, and the README walkthrough's report.

Shared by tests/test_report_browser.py and bench/report_screenshot.py. Chromium is Debian's ``chromium``
(``apt-get install chromium``); ``chromium_path`` is None without it, and the slow tests skip.

Which requests the page made is read from Chromium's own net log (``--log-net-log``): every request the
network stack starts is there, with the site it was made for. The browser's own background requests
(component updates, time, accounts) are made for no site; a request the page made, for its image, font,
style sheet or frame, is made for the page's site (``file://``), and that is what ``page_requests`` lists.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

from tests.helpers.e2e import advance, reconcile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "releases"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, width: int, height: int) -> list[str]:
    """Load ``page`` (a local file), save its screenshot to ``png``; return the URLs the page requested."""
    chromium = chromium_path()
    assert chromium is not None, "chromium is not installed (CONTRIBUTING.md)"
    with tempfile.TemporaryDirectory(prefix="report-browser-") as scratch:
        netlog = Path(scratch) / "netlog.json"
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # a container's root cannot use the setuid sandbox; the page has no script
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={scratch}/profile",
                f"--log-net-log={netlog}",
                f"--screenshot={png}",
                f"--window-size={width},{height}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0 and png.exists(), result.stderr[-2000:]
        return page_requests(netlog.read_text(encoding="utf-8"))


def page_requests(netlog_text: str) -> list[str]:
    """The URLs of the requests made for a ``file://`` page, from a Chromium net log."""
    try:
        log = json.loads(netlog_text)
    except json.JSONDecodeError:  # a log cut short at exit lacks its closing brackets
        log = json.loads(netlog_text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    found = []
    for event in log.get("events", []):
        params: dict[str, Any] = event.get("params") or {}
        if event.get("type") == start_job and "file://" in str(params.get("network_isolation_key", "")):
            found.append(str(params["url"]))
    return found


def pixels(png: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG (as Chromium writes them)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    step = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(b"".join(chunks)), width * step, []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 2:  # up: the common filter of a page's flat areas, done without the loop below
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        for i in range(stride if kind in (1, 3, 4) else 0):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                nearest = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - corner), 2, corner))[2]
                line[i] = (line[i] + nearest) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def walkthrough_report(base: Path) -> Path:
    """The README walkthrough on a scratch factory (apply, a day, apply, a day), then its status page; run
    from a clone of its own (examples/releases committed: apply reads committed manifests, and the
    factory in ``.local-factory``, which git ignores), so the page names the files as the README does."""
    from tests.helpers.e2e import commit, git

    clone = base / "clone"
    shutil.copytree(EXAMPLES, clone / "examples" / "releases")
    git(clone, "init", "-q", "-b", "main")
    git(clone, "config", "user.email", "ops@example.com")
    git(clone, "config", "user.name", "ops")
    commit(clone, {".gitignore": ".local-factory/\n"}, "releases")
    page = base / "report.html"
    with contextlib.chdir(clone):
        for run in ("apply", "advance", "apply", "advance"):
            if run == "advance":
                advance(Path(".local-factory"), "24h")
                continue
            code, _, err = reconcile("examples/releases", "--local", ".local-factory", "--yes")
            assert code == 0, err
        status = ("status", "examples/releases", "--local", ".local-factory", "--with-failed")
        code, _, err = reconcile(*status, "--format", "html", "-o", str(page))
        assert code == 0, err
    return page
