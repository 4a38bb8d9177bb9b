"""The README's screenshot of ``reconcile status --format html``: the walkthrough's factory, in Chromium.

    python bench/report_screenshot.py [--out docs/report.png] [--width 720] [--keep DIR]

Not a timing. Runs the README walkthrough on a scratch local factory (apply, a simulated day, apply, a
day: v42 and v44 complete, v46's canary and beta rolled out), writes its status page with
``reconcile status examples/releases --with-failed --format html -o report.html`` and screenshots it
with headless Chromium (Debian's ``chromium``, CONTRIBUTING.md), as tall as the page is: a first shot
finds where the page ends, the second is cut there. Exit 1 when the page made a network request.
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.render.report import STYLE  # noqa: E402 (after the path)
from tests.helpers.browser import chromium_path, pixels, screenshot, walkthrough_report  # noqa: E402 (after the path)

MARGIN = 16  # pixels kept under the page's last drawn row


def indexed_png(width: int, height: int, rows: list[bytes]) -> bytes:
    """The screenshot with a palette of the page's style colours and its most frequent others, 256 in all
    (each other one, the anti-aliased edges of letters, becomes its nearest): a third of the size, the
    same to the eye."""
    step = len(rows[0]) // width
    pixels_ = [[row[i : i + 3] for i in range(0, len(row), step)] for row in rows]
    counts = Counter(c for row in pixels_ for c in row)
    # The style sheet's own colours first: a small red legend square is rarer than the grey edges of letters.
    named = [bytes.fromhex(hexa) for hexa in dict.fromkeys(re.findall(r"#([0-9a-fA-F]{6})\b", STYLE))]
    palette = [colour for colour in named if colour in counts]
    palette += [colour for colour, _ in counts.most_common(256 + len(palette)) if colour not in palette][
        : 256 - len(palette)
    ]

    def nearest(colour: bytes) -> int:
        return min(
            range(len(palette)), key=lambda i: sum((a - b) ** 2 for a, b in zip(colour, palette[i], strict=True))
        )

    index = {colour: nearest(colour) for colour in {c for row in pixels_ for c in row}}
    raw = b"".join(b"\0" + bytes(index[c] for c in row) for row in pixels_)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
            chunk(b"PLTE", b"".join(palette)),
            chunk(b"IDAT", zlib.compress(raw, 9)),
            chunk(b"IEND", b""),
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "report.png"), help="the PNG (default docs/report.png)")
    ap.add_argument("--width", type=int, default=720, help="window width in CSS pixels (default 720)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (the factory, the page)")
    args = ap.parse_args()
    if chromium_path() is None:
        print("chromium is not installed: apt-get install chromium (CONTRIBUTING.md)", file=sys.stderr)
        return 1
    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="report-screenshot-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        page = walkthrough_report(base)
        probe = base / "probe.png"
        requests = screenshot(page, probe, args.width, 4000)
        width, _, rows = pixels(probe)
        white = rows[0][: len(rows[0]) // width] * width  # the page's background, as its top-left pixel
        bottom = max((y for y, row in enumerate(rows) if row != white), default=len(rows) - 1)
        shot, out = base / "report.png", Path(args.out)
        requests += screenshot(page, shot, args.width, bottom + 1 + MARGIN)
        out.write_bytes(indexed_png(*pixels(shot)))
        print(
            f"{out}: {args.width}x{bottom + 1 + MARGIN}, {out.stat().st_size:,} bytes (Chromium's: {shot.stat().st_size:,})"
        )
        if requests:
            print(f"the page made network requests: {requests}", file=sys.stderr)
            return 1
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
