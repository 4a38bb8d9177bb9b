"""Local factory at scale: a 1,000,000-device factory (init, rollouts, wave status, advance).

    python bench/bench_factory.py [--devices 1000000] [--dir DIR] [--keep] [--smoke]

Targets (issue 3): init under 60 s; rollout with limit 10,000 under 1 s; rollout with 10,000 UUIDs
under 1 s; wave status under 1 s; advance 1h under 10 s. Prints the figures. ``--smoke``: 3,000
devices and rollouts of 100, to check in seconds that the bench still runs (tests/test_benches.py).

The wave is created as ``apply`` creates it: ``targets.signed`` is sent as the canonical bytes that
were signed (``FactoryClient.create_wave``), not re-encoded by httpx's ``json=``, which the factory
refuses as not canonical.
"""

from __future__ import annotations

import argparse
import json
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
ROLLOUT = 10_000  # devices per timed rollout (--smoke: SMOKE_ROLLOUT)
SMOKE_DEVICES, SMOKE_ROLLOUT = 3_000, 100


def limits(rollout: int) -> dict[str, float]:
    """The targets in seconds, by label (the rollout size is in the labels)."""
    return {
        "init": 60,
        f"rollout limit {rollout:,} (us-east)": 1,
        f"rollout limit {rollout:,} (factory-wide)": 1,
        f"rollout {rollout:,} uuids": 1,
        "wave status": 1,
        "advance 1h": 10,
    }


def timed(results: dict, label: str, fn, targets: dict[str, float] | None = None):
    t = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - t
    limit = (targets or {}).get(label)
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
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_DEVICES:,} devices, rollouts of {SMOKE_ROLLOUT}")
    args = ap.parse_args()
    if args.smoke:
        args.devices = SMOKE_DEVICES
    rollout = SMOKE_ROLLOUT if args.smoke else ROLLOUT
    targets = limits(rollout)
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
            targets,
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
        payload = signing.canonical_json(signed)
        sig = signing.find_offline_signer(root, archive, online).sign_bytes(payload)
        body = b"".join(
            [
                b'{"name":"v42","version":"42","tag":"production","targets":{"signed":',
                payload,
                b',"signatures":',
                json.dumps([sig]).encode(),
                b"}}",
            ]
        )
        ok(http.post(f"{F}/waves/", content=body, headers={"content-type": "application/json"}), 201)
        opts = {"dry-run": False, "return-uuids": True, "return-names": False}
        r = timed(
            results,
            f"rollout limit {rollout:,} (us-east)",
            lambda: ok(http.post(f"{F}/waves/v42/rollout/", json={**opts, "group": "us-east", "limit": rollout})),
            targets,
        )
        assert r["device-num"] == rollout, r["device-num"]
        r = timed(
            results,
            f"rollout limit {rollout:,} (factory-wide)",
            lambda: ok(http.post(f"{F}/waves/v42/rollout/", json={**opts, "limit": rollout})),
            targets,
        )
        assert r["device-num"] == rollout, r["device-num"]
        with emb.store.read() as conn:  # production devices of eu-emea nobody staged yet
            uuids = [
                u
                for (u,) in conn.execute(
                    "SELECT uuid FROM devices WHERE group_id = (SELECT id FROM device_groups WHERE name = 'eu-emea') "
                    "AND wave_id IS NULL ORDER BY name DESC LIMIT ?",
                    (rollout,),
                )
            ]
        r = timed(
            results,
            f"rollout {rollout:,} uuids",
            lambda: ok(http.post(f"{F}/waves/v42/rollout/", json={**opts, "uuids": uuids})),
            targets,
        )
        assert r["device-num"] == rollout, r["device-num"]
        st = timed(results, "wave status", lambda: ok(http.get(f"{F}/waves/v42/status/")), targets)
        print(f"  total {st['total-devices']:,}, scheduled {st['scheduled-devices']:,}", flush=True)
        res = timed(
            results, "advance 1h", lambda: runner.invoke(cli.main, ["--local", str(path), "advance", "1h"]), targets
        )
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
        over = [k for k, limit in targets.items() if results.get(k, 0) >= limit]
        print("all targets met" if not over else f"over target: {', '.join(over)}")
        return 1 if over else 0
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
