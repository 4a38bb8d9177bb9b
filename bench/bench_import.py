"""``reconcile import`` over a network: bench_plan.py's factory (20 active waves among 500, 100,000 devices).

    python bench/bench_import.py [--devices 100000] [--keep DIR] [--runs 5] [--rtt MS ...] [--tls [--tls12]]
                                 [--all] [--against REV] [--smoke]

No target of its own (an import is a one-time command); it shows how many round trips one waits for.
Setup (not timed): exactly bench_plan.py's (``bench_plan.setup``; ``--keep DIR`` shares it). Timed: the
whole ``reconcile import DIR --api-url`` process against ``reconcile-factory serve`` through bench_plan's
delaying proxy (``--tls``: HTTPS, handshakes included), DIR emptied before each run: wall time, requests,
connections and the longest chain of requests that waited on each other. It reads the wave list's first
page and its active waves (``--all``: all 6 pages), then each wave it takes with its targets, the
production root and the online key (reconciler/factory/adopt.py), and writes 20 manifests; ``--all``
takes the finished waves too (501 in all).
``--against REV``: REV's reconciler too, its runs alternating with this tree's (as bench_plan.py's).
``--smoke``: bench_plan's smoke setup, one run over TLS at 10 ms: the bench still runs (tests/test_benches.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_plan  # bench/ is on sys.path: the same setup as the plan benchmark


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000, help="production devices in all (default 100,000)")
    ap.add_argument("--keep", metavar="DIR", help="build the setup in DIR and keep it (reused when it exists)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per round trip (default 5)")
    ap.add_argument("--rtt", type=int, action="append", metavar="MS", help="round trip in ms (repeatable; default 100)")
    ap.add_argument("--tls", action="store_true", help="HTTPS through the proxy (a throwaway CA)")
    ap.add_argument("--tls12", action="store_true", help="with --tls: TLS 1.2 (two handshake round trips)")
    ap.add_argument("--all", action="store_true", help="import the finished waves too (reconcile import --all)")
    ap.add_argument("--against", metavar="REV", help="time commit REV's reconciler too, alternating")
    ap.add_argument("--smoke", action="store_true", help="a tiny setup and one run: does the bench run?")
    args = ap.parse_args()
    if args.smoke:
        bench_plan.shrink_for_smoke()
        args.devices, args.runs, args.rtt, args.tls = 10_000, 1, [10], True

    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-import-"))
    base.mkdir(parents=True, exist_ok=True)
    imported = base / "imported"
    try:
        factory, _, _ = bench_plan.setup(base, args.devices, True)
        tls = bench_plan.ThrowawayCA(base / "tls") if args.tls or args.tls12 else None
        against = (args.against, bench_plan.unpack(args.against, base / "against")) if args.against else None
        command = ["import", str(imported), *(["--all"] if args.all else [])]
        print(f"\ntimed: {bench_plan.reconcile_exe()} {' '.join(command)} --api-url PROXY --factory demo", flush=True)
        bench_plan.over_network(
            factory, command, args.rtt or [100], args.runs, tls, args.tls12, {}, against=against, emptied=imported
        )
        print(f"manifests written by the last run: {len(list(imported.glob('*.yaml')))}")
        return 0
    finally:
        shutil.rmtree(base / "against", ignore_errors=True)
        shutil.rmtree(imported, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
