"""Every bench still runs: each ``bench/bench_*.py`` at its ``--smoke`` size (issue 26).

A bench is a script nothing imports, so a change that breaks one (bench_factory.py sent JSON the stricter
factory refused, and nobody noticed) stays hidden until someone wants its figures. Each bench accepts
``--smoke``: a tiny setup and one run, its figures printed but not judged against the targets (those are
for the full size, on a quiet machine). The benches are found by glob, so a new one is covered by being
written; one without ``--smoke`` fails here.

They run at once, as subprocesses started by one fixture (they mostly wait: on a served factory, on a
proxy's delay), so the whole module takes about as long as the slowest of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from latency_proxy import LatencyProxy  # the benches' proxy, on the path just above

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted((ROOT / "bench").glob("bench_*.py"))
TIMEOUT = 240  # seconds for all of them together; each takes a few seconds to half a minute
# A figure: a number with its unit, as every bench prints its timings ("0.518 s", "13.8 ms", "4.50s").
FIGURE = re.compile(r"\b\d+(\.\d+)?\s?(s|ms|MiB)\b")


@dataclass
class SmokeRun:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float  # time.monotonic()


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SmokeRun]]:
    """Every bench started with ``--smoke``, stdout and stderr in files; killed if still running at the end."""
    logs = tmp_path_factory.mktemp("bench-smoke")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    runs: dict[str, SmokeRun] = {}
    try:
        for bench in BENCHES:
            out, err = logs / f"{bench.stem}.out", logs / f"{bench.stem}.err"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, str(bench), "--smoke"], cwd=ROOT, env=env, stdout=stdout, stderr=stderr
                )
            runs[bench.name] = SmokeRun(process, out, err, time.monotonic())
        yield runs
    finally:
        for run in runs.values():
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()


def test_every_bench_is_found() -> None:
    assert {"bench_plan.py", "bench_apply.py", "bench_check.py", "bench_factory.py"} <= {b.name for b in BENCHES}


@pytest.mark.parametrize("bench", BENCHES, ids=[b.stem for b in BENCHES])
def test_bench_runs_at_smoke_size(bench: Path, smoke_runs: dict[str, SmokeRun]) -> None:
    run = smoke_runs[bench.name]
    try:
        run.process.wait(timeout=max(1.0, run.started + TIMEOUT - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{bench.name} --smoke still running {TIMEOUT} s after the benches started")
    stdout, stderr = run.stdout.read_text(), run.stderr.read_text()
    assert run.process.returncode == 0, (
        f"{bench.name} --smoke exited {run.process.returncode}:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    )
    assert FIGURE.search(stdout), f"{bench.name} --smoke printed no figure:\n{stdout[-2000:]}"


def against_head(bench: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``bench --smoke ARGS --against HEAD``: HEAD's reconciler, unpacked from git, timed beside this tree's."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / bench), "--smoke", *args, "--against", "HEAD"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_bench_check_compares_side_by_side_with_a_commit() -> None:
    """``bench_check.py --against REV`` times REV's own code, unpacked from git, side by side with this tree's.
    Each runs in its own directory (``python -c`` imports from there before ``PYTHONPATH``), and the bench
    exits 1 if ``reconciler`` came from elsewhere: else it would time one tree twice, and print 1.00."""
    result = against_head("bench_check.py")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"side by side, HEAD: CPU best \d+\.\d+ s", result.stdout), result.stdout
    assert re.search(r"this tree / HEAD: CPU ratio \d+\.\d\d of the bests", result.stdout), result.stdout


def test_bench_plan_compares_a_plan_over_the_network_with_a_commit() -> None:
    """``bench_plan.py --rtt MS --against REV``: REV's reconciler, unpacked from git, plans over the same proxy
    in turn with this tree's, and the ratio is printed. It exits 1 if ``reconciler`` came from elsewhere
    (10 ms has no target to miss)."""
    result = against_head("bench_plan.py", "--rtt", "10", "--tls")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"HEAD, alternating: wall best \d+\.\d+ s", result.stdout), result.stdout
    assert re.search(r"this tree / HEAD: \d+\.\d\d of the bests", result.stdout), result.stdout


def test_the_latency_proxy_tells_a_dry_run_from_a_write() -> None:
    """bench_apply.py counts the apply's chain before its first write as its observation; a rollout's dry
    run (which only counts devices) is a POST too, and must not count as that write."""

    class Answer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with LatencyProxy(server.server_address[1], rtt_ms=0) as proxy, httpx.Client(base_url=proxy.url) as client:
            padding = "x" * 1000  # the flag comes first, then more than the proxy keeps of a body
            for dry_run in (True, False, True):
                body = {"group": "canary", "dry-run": dry_run, "return-uuids": False, "note": padding}
                assert client.post("/ota/factories/f/waves/w/rollout/", json=body).status_code == 202
            assert client.post("/ota/factories/f/waves/", json={"name": "w"}).status_code == 202
            assert [exchange.dry_run for exchange in proxy.exchanges] == [True, False, True, False]
    finally:
        server.shutdown()
        server.server_close()
