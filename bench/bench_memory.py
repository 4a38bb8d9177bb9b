"""Peak memory of a plan against a server whose answers never end.

    python bench/bench_memory.py [--mode chunked|length|gzip ...] [--smoke]

A loopback server answers every request with ``200`` and a JSON body that never ends, then
``reconcile --dry-run examples/releases --api-url`` plans against it. Measured: the exit code, the
message, the wall time and the peak resident memory of the ``reconcile`` process (``ru_maxrss`` of that
child, from ``os.wait4``). Modes: ``chunked`` (chunked transfer encoding, no end announced), ``length``
(a ``Content-Length`` of 100 GB) and ``gzip`` (``Content-Encoding: gzip``, a deflate stream of zeros
sent without end, about 1,000 times larger decoded: the cap on the decoded answer is what holds); and
``concurrent``: the wave list is answered (no waves), then every other read, which the plan sends
together, gets an endless chunked answer, so several are read at once.

Target (issue 26): under 200 MiB (it was 1.2 GiB when answers were read whole into memory until the
deadline). Answers are read as they arrive, at most 64 MiB of them as sent and 64 MiB once decoded
(``reconciler.factory.transport.MAX_ANSWER``); the run stops with one line saying so. ``--smoke``: the
chunked mode only, figures printed but not judged (tests/test_benches.py).

The server sends at most ``SEND_LIMIT`` bytes per connection, so it stops by itself if a client never does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Self

from programenv import program_env  # bench/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parent.parent
TARGET_MIB = 200
SEND_LIMIT = 2 * 1024**3  # bytes per connection, whatever the client does
CHUNK = 1024 * 1024
MODES = ("chunked", "length", "gzip", "concurrent")
EMPTY_WAVES = b'{"waves":[],"total":0,"next":null}'  # the "concurrent" mode's answer to the wave list


def gzip_of_zeros() -> tuple[bytes, bytes]:
    """The gzip header and a block of deflated ``0`` characters (64 MiB of them in about 64 KiB) that can
    be sent again and again: a back reference in a repeat points at ``0`` characters as in the first."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = compressor.compress(b"[") + compressor.flush(zlib.Z_SYNC_FLUSH)
    block = compressor.compress(b"0" * (64 * CHUNK)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return head, block


class EndlessServer:
    """An HTTP/1.1 server on loopback whose every answer is ``200`` with a body that never ends."""

    def __init__(self, mode: str):
        self.mode = mode
        self._gzip = gzip_of_zeros() if mode == "gzip" else None
        self.port = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            request = await reader.readuntil(b"\r\n\r\n")  # the head; a body (if any) is not read
            self.requests += 1
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            if self.mode == "concurrent" and b"/waves/?" in request.split(b"\r\n", 1)[0]:
                writer.write(head + b"Content-Length: %d\r\n\r\n%s" % (len(EMPTY_WAVES), EMPTY_WAVES))
                await writer.drain()
                request = await reader.readuntil(b"\r\n\r\n")  # the next request on this connection
                self.requests += 1
            if self.mode == "length":
                head += b"Content-Length: 100000000000\r\n\r\n"
                first, block = b"[", b"0," * (CHUNK // 2)
            elif self.mode == "gzip":
                head += b"Content-Encoding: gzip\r\nContent-Length: 100000000000\r\n\r\n"
                assert self._gzip is not None
                first, block = self._gzip
            else:
                head += b"Transfer-Encoding: chunked\r\n\r\n"
                body = b"0," * (CHUNK // 2)
                first, block = b"1\r\n[\r\n", b"%x\r\n%s\r\n" % (len(body), body)
            writer.write(head + first)
            sent = 0
            while sent < SEND_LIMIT:
                writer.write(block)
                await writer.drain()
                sent += len(block)
        writer.close()


def run_plan(url: str, manifests: Path) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak RSS in MiB, last line of stderr) of ``reconcile --dry-run``."""
    reconcile = Path(sys.executable).parent / "reconcile"
    exe = str(reconcile) if reconcile.exists() else (shutil.which("reconcile") or "reconcile")
    env = {**program_env(), "RECONCILE_API_TOKEN": "bench"}
    args = [exe, "--dry-run", str(manifests), "--api-url", url, "--factory", "demo"]
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - t
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return process.returncode, wall, usage.ru_maxrss / 1024, (lines[-1] if lines else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", action="append", choices=MODES, help="repeatable; default: all three")
    ap.add_argument("--smoke", action="store_true", help="the chunked mode only, not judged")
    args = ap.parse_args()
    modes = ["chunked"] if args.smoke else (args.mode or list(MODES))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        manifests = Path(tmp) / "releases"
        shutil.copytree(ROOT / "examples" / "releases", manifests)
        met = True
        for mode in modes:
            with EndlessServer(mode) as server:
                code, wall, peak, message = run_plan(f"http://127.0.0.1:{server.port}", manifests)
            ok = peak < TARGET_MIB and code != 0
            met = met and ok
            print(
                f"{mode:<8} endless answer: exit {code}, wall {wall:.2f} s, peak RSS {peak:.0f} MiB "
                f"(target < {TARGET_MIB} MiB: {'met' if ok else 'MISSED'}), {server.requests} request(s); {message}",
                flush=True,
            )
    return 0 if met or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
