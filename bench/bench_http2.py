"""HTTP/1.1 against HTTP/2 for a plan's requests over TLS: what the client would gain from HTTP/2 (issue 26).

    python bench/bench_http2.py [--devices 100000] [--keep DIR] [--runs 5] [--rtt MS ...] [--smoke]

The reconciler speaks HTTP/1.1 only: httpx's sync client breaks when threads share an HTTP/2 connection
(encode/httpx#3324; factory/transport.py). This bench measures what HTTP/2 would bring, without the
reconciler's client:

- Setup (not timed): bench_plan.py's (``bench_plan.setup``; ``--keep DIR`` shares it). One ``reconcile
  --dry-run`` through bench_plan's proxy records the plan's requests (method, path and query, body), the
  status of each answer (a replayed answer must have the same) and the round each went out in: its place
  in the longest chain of requests that each waited for the one before (1 for those sent first).
- The local factory's API app is then served by hypercorn over TLS (a throwaway CA; ALPN offers h2 and
  http/1.1), behind the proxy in ``passthrough`` mode: the encrypted bytes are delayed half a round trip
  each way, and a new connection waits one round trip more (TCP's handshake).
- Timed, each in a process of its own, their runs alternating: the recorded requests replayed round by
  round, each round's requests at once, after the connections are open (as the reconciler opens them
  while its command line and manifests load):

  - ``http/1.1``: one ``httpx.Client`` shared by 64 threads, as the reconciler sends; one connection per
    request of the largest round, opened with one request each before the replay;
  - ``http/2``: one ``httpx.AsyncClient(http2=True)`` in one event loop; one connection, opened the same
    way.

Printed per round trip: the replay's wall time (best and median), the client's CPU for the replay and
for opening its connections (``getrusage`` of the replaying process: every thread), and the
connections. No target: the figures decide whether an HTTP/2 client is worth building.
``--smoke``: bench_plan's smoke setup, one run at 10 ms: the bench still runs (tests/test_benches.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_plan  # bench/ is on sys.path: the same setup as the plan benchmark
import httpx
from latency_proxy import BODY_KEPT, LatencyProxy, ThrowawayCA
from programenv import program_env

MODES = ("http/1.1", "http/2")
THREADS = 64  # the reconciler's requests at once (connections.MAX_CONCURRENT)
JSON = {"Content-Type": "application/json"}  # a request's body: the recorded ones are the plan's JSON


def record(factory: Path, manifests: Path) -> dict[str, Any]:
    """The requests of one ``reconcile --dry-run MANIFESTS`` against the served factory, by round, with the
    status of each answer, and the API token they were sent with."""
    with bench_plan.ServedFactory(factory) as served, LatencyProxy(served.port, rtt_ms=100) as proxy:
        env = {**program_env(), "RECONCILE_API_TOKEN": served.token}
        command = [bench_plan.reconcile_exe(), "--dry-run", str(manifests), "--api-url", proxy.url, "--factory", "demo"]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode not in (0, 2):
            raise SystemExit(f"reconcile --dry-run failed ({result.returncode}):\n{result.stderr[-2000:]}")
        rounds = proxy.rounds()
        token = served.token
    for exchange in (e for one in rounds for e in one):
        if len(exchange.body) >= BODY_KEPT:
            raise SystemExit(f"a request body was cut at {BODY_KEPT} bytes: {exchange.method} {exchange.target}")
    requests = [[[e.method, e.target, e.body.decode(), e.status] for e in one] for one in rounds]
    return {"token": token, "rounds": requests}


def serve(factory: Path, ca: ThrowawayCA) -> tuple[int, Callable[[], object], threading.Thread]:
    """The factory's API app on hypercorn over TLS (ALPN h2, http/1.1) in a thread of its own event loop: its
    port, a function that stops it, and the thread."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from reconciler.localfactory.app import make_app
    from reconciler.localfactory.store import Store

    listening = socket.create_server(("127.0.0.1", 0))  # hypercorn serves a socket it is given: fd://
    config = Config()
    config.bind = [f"fd://{listening.fileno()}"]
    config.certfile, config.keyfile = str(ca.cert_file), str(ca.key_file)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = config.errorlog = None
    app = make_app(Store.in_dir(factory), require_token=True)
    loop = asyncio.new_event_loop()
    stopped = asyncio.Event()

    async def run() -> None:
        try:
            await hypercorn_serve(app, config, mode="wsgi", shutdown_trigger=stopped.wait)
        finally:
            listening.detach()  # hypercorn served it by its descriptor, and has closed that

    def serving() -> None:
        try:
            loop.run_until_complete(run())
        finally:
            loop.close()

    server = threading.Thread(target=serving, daemon=True)
    server.start()
    return listening.getsockname()[1], lambda: loop.call_soon_threadsafe(stopped.set), server


def replay(mode: str, url: str, recorded: dict[str, Any]) -> dict[str, float]:
    """In this process: open the connections, then send the rounds, each answer checked against the status
    the plan got; wall time and CPU of each part."""
    headers = {"OSF-TOKEN": recorded["token"]}
    rounds = [
        [(method, url + target, body.encode() or None, status) for method, target, body, status in one]
        for one in recorded["rounds"]
    ]
    width = max(len(one) for one in rounds)
    opening = rounds[0][0][1]  # the plan's first request: the wave list's first page

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def check(answer: httpx.Response, status: int) -> None:
        if answer.status_code != status or (mode == "http/2" and answer.http_version != "HTTP/2"):
            raise SystemExit(
                f"{answer.request.method} {answer.request.url}: {answer.http_version} "
                f"{answer.status_code}, the plan got {status}: {answer.text[:200]}"
            )

    if mode == "http/1.1":
        limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
        with httpx.Client(headers=headers, limits=limits, timeout=60) as client, ThreadPoolExecutor(THREADS) as pool:
            start, used = time.perf_counter(), cpu()
            list(pool.map(lambda _: client.get(opening).raise_for_status(), range(width)))
            opened = time.perf_counter() - start, cpu() - used
            start, used = time.perf_counter(), cpu()
            for one in rounds:
                answers = pool.map(
                    lambda r: client.request(r[0], r[1], content=r[2], headers=JSON if r[2] else None), one
                )
                for answer, (*_, status) in zip(answers, one, strict=True):
                    check(answer, status)
            sent = time.perf_counter() - start, cpu() - used
    else:

        async def run() -> tuple[tuple[float, float], tuple[float, float]]:
            async with httpx.AsyncClient(http2=True, headers=headers, timeout=60) as client:
                start, used = time.perf_counter(), cpu()
                check(await client.get(opening), 200)
                opened = time.perf_counter() - start, cpu() - used
                start, used = time.perf_counter(), cpu()
                for one in rounds:
                    answers = await asyncio.gather(
                        *(client.request(r[0], r[1], content=r[2], headers=JSON if r[2] else None) for r in one)
                    )
                    for answer, (*_, status) in zip(answers, one, strict=True):
                        check(answer, status)
                return opened, (time.perf_counter() - start, cpu() - used)

        opened, sent = asyncio.run(run())
    return {"wall": sent[0], "cpu": sent[1], "open_wall": opened[0], "open_cpu": opened[1]}


def measure(factory: Path, rounds_file: Path, rtts: list[int], runs: int, base: Path) -> None:
    ca = ThrowawayCA(base / "ca")
    port, stop, server = serve(factory, ca)
    env = {**program_env(), "SSL_CERT_FILE": str(ca.ca_file)}
    try:
        for rtt in rtts:
            with LatencyProxy(port, rtt_ms=rtt, passthrough=True) as proxy:
                figures: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
                for run in range(runs):
                    for mode in MODES if run % 2 == 0 else reversed(MODES):
                        child = [sys.executable, __file__, "--replay", mode, proxy.url, str(rounds_file)]
                        proxy.reset()
                        result = subprocess.run(child, capture_output=True, text=True, env=env, check=False)
                        if result.returncode != 0:
                            raise SystemExit(f"the {mode} replay failed:\n{result.stderr[-2000:]}")
                        figures[mode].append({**json.loads(result.stdout), "connections": proxy.connections})
            for mode in MODES:
                rows = figures[mode]
                walls = [row["wall"] for row in rows]
                print(
                    f"rtt {rtt:>4} ms, {mode:8}: replay wall best {min(walls):.3f} s, median "
                    f"{statistics.median(walls):.3f} s; client CPU {statistics.median(r['cpu'] for r in rows):.3f} s "
                    f"(median), opening its {rows[0]['connections']:.0f} connection(s) "
                    f"{statistics.median(r['open_cpu'] for r in rows):.3f} s CPU, "
                    f"{statistics.median(r['open_wall'] for r in rows):.3f} s wall ({runs} runs)",
                    flush=True,
                )
    finally:
        stop()
        server.join(30)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--replay":
        print(json.dumps(replay(sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text()))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000, help="production devices in all (default 100,000)")
    ap.add_argument("--keep", metavar="DIR", help="build the setup in DIR and keep it (reused when it exists)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each protocol per round trip (default 5)")
    ap.add_argument("--rtt", type=int, action="append", metavar="MS", help="round trip in ms (repeatable; default 100)")
    ap.add_argument("--smoke", action="store_true", help="a tiny setup and one run: does the bench run?")
    args = ap.parse_args()
    if args.smoke:
        bench_plan.shrink_for_smoke()
        args.devices, args.runs, args.rtt = 10_000, 1, [10]
    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-http2-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        factory, manifests, _ = bench_plan.setup(base, args.devices, True)
        recorded = record(factory, manifests)
        rounds_file = base / "rounds.json"
        rounds_file.write_text(json.dumps(recorded))
        sizes = [len(one) for one in recorded["rounds"]]
        print(f"the plan's requests: {sum(sizes)} in {len(sizes)} rounds ({', '.join(map(str, sizes))})", flush=True)
        measure(factory, rounds_file, args.rtt or [100], args.runs, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
