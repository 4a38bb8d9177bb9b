"""Local factory at scale: a 1,000,000-device factory (init, rollouts, wave status, advance).

    python bench/bench_factory.py [--devices 1000000] [--dir DIR] [--keep]

Targets (issue 3): init under 60 s; rollout with limit 10,000 under 1 s; rollout with 10,000 UUIDs
under 1 s; wave status under 1 s; advance 1h under 10 s. Prints the figures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datetime import UTC

import httpx
from click.testing import CliRunner

from reconciler import signing
from reconciler.localfactory import cli, open_embedded

F = "/ota/factories/demo"
LIMITS = {
    "init": 60,
    "rollout limit 10,000 (us-east)": 1,
    "rollout limit 10,000 (factory-wide)": 1,
    "rollout 10,000 uuids": 1,
    "wave status": 1,
    "advance 1h": 10,
}


def timed(results: dict, label: str, fn):
    t = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - t
    limit = LIMITS.get(label)
    verdict = "" if limit is None else ("  ok" if results[label] < limit else f"  OVER {limit}s")
    print(f"{label:<40} {results[label]:8.3f} s{verdict}", flush=True)
    return value


def ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text[:500]
    return r.json()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-factory-"))
    path = base / "factory"
    results: dict[str, float] = {}
    print(f"factory: {path}, {args.devices:,} devices", flush=True)
    try:
        runner = CliRunner()
        res = timed(
            results,
            "init",
            lambda: runner.invoke(
                cli.main,
                [
                    "--local",
                    str(path),
                    "init",
                    "--demo",
                    "--devices",
                    str(args.devices),
                    "--start",
                    "2026-01-05T12:00:00Z",
                ],
            ),
        )
        assert res.exit_code == 0, res.output
        emb = open_embedded(path)
        http = httpx.Client(transport=httpx.WSGITransport(app=emb.app), base_url="http://lf", timeout=120)
        archive = signing.load_key_archive_file(emb.keys_archive)
        from datetime import datetime, timedelta

        ci = ok(http.get(f"{F}/targets/", params={"version": 42}))
        prod = ok(http.get(f"{F}/prod-targets/", params={"tag": "production"}))["production"]
        root = ok(http.get("/ota/repo/demo/api/v1/user_repo/root.json"))
        online = ok(http.get(f"{F}/ci-targets.pub"))
        signed = signing.build_wave_targets(
            ci_targets=ci,
            prod_targets=prod,
            version=42,
            tag="production",
            expires=datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=1),
        )
        sig = signing.find_offline_signer(root, archive, online).sign(signed)
        ok(
            http.post(
                f"{F}/waves/",
                json={
                    "name": "v42",
                    "version": "42",
                    "tag": "production",
                    "targets": {"signed": signed, "signatures": [sig]},
                },
            ),
            201,
        )
        opts = {"dry-run": False, "return-uuids": True, "return-names": False}
        r = timed(
            results,
            "rollout limit 10,000 (us-east)",
            lambda: ok(http.post(f"{F}/waves/v42/rollout/", json={**opts, "group": "us-east", "limit": 10000})),
        )
        assert r["device-num"] == 10000, r["device-num"]
        r = timed(
            results,
            "rollout limit 10,000 (factory-wide)",
            lambda: ok(http.post(f"{F}/waves/v42/rollout/", json={**opts, "limit": 10000})),
        )
        assert r["device-num"] == 10000, r["device-num"]
        with emb.store.read() as conn:  # 10,000 production devices of eu-emea nobody staged yet
            uuids = [
                u
                for (u,) in conn.execute(
                    "SELECT uuid FROM devices WHERE group_id = (SELECT id FROM device_groups WHERE name = 'eu-emea') "
                    "AND wave_id IS NULL ORDER BY name DESC LIMIT 10000"
                )
            ]
        r = timed(
            results,
            "rollout 10,000 uuids",
            lambda: ok(http.post(f"{F}/waves/v42/rollout/", json={**opts, "uuids": uuids})),
        )
        assert r["device-num"] == 10000, r["device-num"]
        st = timed(results, "wave status", lambda: ok(http.get(f"{F}/waves/v42/status/")))
        print(f"  total {st['total-devices']:,}, scheduled {st['scheduled-devices']:,}", flush=True)
        res = timed(results, "advance 1h", lambda: runner.invoke(cli.main, ["--local", str(path), "advance", "1h"]))
        assert res.exit_code == 0, res.output
        print("  " + res.output.strip(), flush=True)
        st = timed(results, "wave status after advance", lambda: ok(http.get(f"{F}/waves/v42/status/")))
        print(f"  updated {st['updated-devices']:,}, scheduled {st['scheduled-devices']:,}", flush=True)
        timed(results, "factory status", lambda: ok(http.get(f"{F}/status/")))
        timed(
            results,
            "device list page (500)",
            lambda: ok(
                http.get("/ota/devices/", params={"factory": "demo", "group": "us-east", "limit": 500, "page": 3})
            ),
        )
        res = timed(
            results,
            "advance 1d (crosses midnight)",
            lambda: runner.invoke(cli.main, ["--local", str(path), "advance", "1d"]),
        )
        print("  " + res.output.strip(), flush=True)
        http.close()
        emb.store.close()
        over = [k for k, limit in LIMITS.items() if results.get(k, 0) >= limit]
        print("all targets met" if not over else f"over target: {', '.join(over)}")
        return 1 if over else 0
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
