"""``reconcile status`` at scale: bench_plan.py's setup (500 manifests, 20 active waves, 100,000 devices).

    python bench/bench_status.py [--devices 100000] [--keep DIR] [--runs 5] [--rtt MS ... [--tls [--tls12]]] [--smoke]

Target (issue 12): ``reconcile status MANIFESTS --local FACTORY`` takes under 2 s wall time for the
whole process. Exit 1 when the best wall time is over 2 s.

Setup (not timed): exactly bench_plan.py's (``bench_plan.setup``; ``--keep DIR`` shares it with
``bench_plan.py --keep DIR``). Timed: the whole process, text and ``--format json``, best and median
of ``--runs`` runs and the child CPU time; then one in-process run gives the HTTP requests, checked
against the budget in reconciler/status.py's docstring. Also timed, once each: ``--devices`` of one
active wave (the tag with 1,000 devices), which reads update events per device not yet updated.

With ``--rtt MS`` (repeatable): the same ``reconcile status --api-url`` against ``reconcile-factory serve``
through bench_plan's delaying proxy (``--tls``: over HTTPS, handshakes included), then stop; figures only.
``--smoke``: bench_plan's smoke setup, one run, then one run over TLS at 10 ms: the bench still runs, in
seconds (tests/test_benches.py); the figures are printed, not judged.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_plan  # bench/ is on sys.path: the same setup as the plan benchmark

from reconciler.factory.client import PAGE_SIZE, FactoryClient, select_backend
from reconciler.factory.status import read_status
from reconciler.manifest import load

TARGET_SECONDS = 2.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000, help="production devices in all (default 100,000)")
    ap.add_argument("--keep", metavar="DIR", help="build the setup in DIR and keep it (reused when it exists)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per format (default 5)")
    ap.add_argument("--rtt", type=int, action="append", metavar="MS", help="over HTTP with MS ms round trip, then stop")
    ap.add_argument("--tls", action="store_true", help="with --rtt: HTTPS through the proxy (a throwaway CA)")
    ap.add_argument("--tls12", action="store_true", help="with --tls: TLS 1.2 (two handshake round trips)")
    ap.add_argument("--smoke", action="store_true", help="a tiny setup and one run of each: does the bench run?")
    args = ap.parse_args()
    if args.smoke:
        bench_plan.shrink_for_smoke()
        args.devices, args.runs = 10_000, 1

    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-status-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        factory, manifests, _ = bench_plan.setup(base, args.devices, True)
        tls = bench_plan.ThrowawayCA(base / "tls") if args.tls or args.tls12 or args.smoke else None
        if args.rtt:
            bench_plan.over_network(factory, ["status", str(manifests)], args.rtt, args.runs, tls, args.tls12, {})
            return 0
        command = ["status", str(manifests), "--local", str(factory)]
        print(f"\ntimed: {bench_plan.reconcile_exe()} {' '.join(command)}", flush=True)
        text = bench_plan.timed_runs(command, args.runs)
        as_json = bench_plan.timed_runs([*command, "--format", "json"], args.runs)
        report = json.loads(as_json["stdout"])

        specs = load([str(manifests)]).specs
        with FactoryClient(select_backend(api_url=None, factory=None, local=str(factory))) as client:
            t = time.perf_counter()
            read_status(client, specs)
            warm = time.perf_counter() - t
            requests = client.requests
            total_waves = len(client.list_waves())
        counted = sum(1 for w in report["waves"] if w["devices"] is not None)
        budget = math.ceil(total_waves / PAGE_SIZE) + 2 + counted
        by_status: dict[str, int] = {}
        for wave in report["waves"]:
            by_status[wave["status"]] = by_status.get(wave["status"], 0) + 1
        print(
            f"waves shown: {len(report['waves'])} ({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))}); "
            f"{counted} with a status call"
        )
        print(
            f"HTTP requests: {requests} (budget ceil({total_waves}/{PAGE_SIZE}) + 2 + {counted} = {budget}); "
            f"in-process read {warm:.3f} s"
        )
        print(f"{'':<26}{'best':>9}{'median':>9}{'CPU':>9}   all runs")
        for label, r in (("wall, text output", text), ("wall, --format json", as_json)):
            runs = " ".join(f"{w:.3f}" for w in r["walls"])
            print(f"{label:<26}{r['best']:8.3f}s{r['median']:8.3f}s{r['cpu']:8.3f}s   {runs}")

        active = next(w["name"] for w in report["waves"] if w["status"] == "active" and w["tag"] != "production")
        devices = bench_plan.timed_runs(["status", "--devices", active, "--local", str(factory), "--format", "json"], 1)
        listed = json.loads(devices["stdout"])["devices"]
        print(f"wall, --devices {active}: {devices['best']:.3f} s ({len(listed)} devices listed)")

        best = min(text["best"], as_json["best"])
        met = best <= TARGET_SECONDS and requests <= budget
        print(
            f"\ntarget: best wall {best:.3f} s {'<=' if best <= TARGET_SECONDS else '>'} {TARGET_SECONDS:.0f} s, "
            f"requests {requests} {'<=' if requests <= budget else '>'} {budget}: {'met' if met else 'MISSED'}"
        )
        if args.smoke:
            bench_plan.over_network(factory, ["status", str(manifests)], [10], 1, tls, targets={})
            return 0
        return 0 if met else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
