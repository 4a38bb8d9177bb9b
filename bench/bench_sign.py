"""Sign production targets with 10,000 entries: reconciler.signing against python-tuf's Metadata.sign().

Ours: build the wave targets like `fioctl waves init`, canonicalise them and sign.
python-tuf: Metadata.sign() of the same targets content with the same key (to_dict, its canonical
JSON, the signature). Prints the best of several runs for each (their runs interleaved), and the ratio of
the bests and of the medians; exits 1 if ours is slower (the bests).

    PYTHONPATH=. python bench/bench_sign.py [--targets 10000] [--repeat 5] [--keytype ED25519|RSA] [--smoke]

``--smoke``: 200 targets, one run, the ratio printed but not judged: the bench still runs
(tests/test_benches.py).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, TargetFile, Targets

from reconciler import signing

HARDWARE = ("intel-corei7-64", "raspberrypi4-64", "imx8mm-lpddr4-evk", "qemuarm64-secureboot")


def ci_targets(count: int, version: int) -> dict:
    """CI targets shaped like Foundries ones: a 15-field custom per entry, as in the docs sample."""
    targets = {}
    for i in range(count):
        hwid = f"{HARDWARE[i % len(HARDWARE)]}-{i // len(HARDWARE)}"
        digest = hashlib.sha256(f"{hwid}:{version}".encode()).hexdigest()
        targets[f"{hwid}-lmp-{version}"] = {
            "length": 0,
            "hashes": {"sha256": digest},
            "custom": {
                "cliUploaded": False,
                "containers-sha": digest[:40],
                "createdAt": "2024-05-01T10:20:30Z",
                "docker_compose_apps": {"shellhttpd": {"uri": f"hub.foundries.io/f/shellhttpd@sha256:{digest}"}},
                "hardwareIds": [hwid],
                "lmp-manifest-sha": digest[8:48],
                "lmp-ver": "4.0.11",
                "meta-subscriber-overrides-sha": digest[16:56],
                "name": hwid + "-lmp",
                "origUri": f"https://ci.foundries.io/projects/f/lmp/builds/{version}",
                "tags": ["main"],
                "targetFormat": "OSTREE",
                "updatedAt": "2024-05-01T10:20:30Z",
                "uri": f"https://ci.foundries.io/projects/f/lmp/builds/{version}",
                "version": str(version),
            },
        }
    return targets


def alternating(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """The wall times of ``repeat`` runs of each function, their runs interleaved: the machine's speed moves
    within a minute, and timing all of ours before all of python-tuf's put that drift in the ratio (one run
    gave 0.99 where the others gave 0.50-0.66)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keytype", choices=["ED25519", "RSA"], default="ED25519", help="RSA is 4096 bits")
    parser.add_argument("--smoke", action="store_true", help="200 targets, one run, not judged")
    args = parser.parse_args()
    if args.smoke:
        args.targets, args.repeat = 200, 1

    expires = datetime.now(timezone.utc) + timedelta(days=365)
    ci = ci_targets(args.targets, 42)
    pair = signing.generate_keypair(args.keytype)
    ours_signer = signing.signer_for_keypair(pair)

    def ours():
        signed = signing.build_wave_targets(
            ci_targets=ci, prod_targets=None, version=42, tag="production", expires=expires
        )
        return {"signed": signed, "signatures": [ours_signer.sign(signed)]}

    envelope = ours()
    payload = signing.canonical_json(envelope["signed"])

    # python-tuf on the same content and key: spec-shaped metadata (it cannot hold _type "Targets").
    secret = pair.private["keyval"]["private"]
    if args.keytype == "ED25519":
        private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    else:
        private = serialization.load_pem_private_key(secret.encode(), None)
    their_signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), scheme=ours_signer.method))
    build_start = time.perf_counter()
    md = Metadata(
        Targets(
            version=42,
            expires=expires.replace(microsecond=0),
            targets={
                name: TargetFile(meta["length"], meta["hashes"], name, {"custom": meta["custom"]})
                for name, meta in envelope["signed"]["targets"].items()
            },
        )
    )
    their_build = time.perf_counter() - build_start

    times = alternating(
        {
            "ours": ours,
            "canonical": lambda: signing.canonical_json(envelope["signed"]),
            "theirs": lambda: md.sign(their_signer),
        },
        args.repeat,
    )
    t_ours, t_canonical, t_theirs = (min(times[name]) for name in ("ours", "canonical", "theirs"))
    ratio = t_ours / t_theirs
    median_ratio = statistics.median(times["ours"]) / statistics.median(times["theirs"])
    print(
        f"targets: {args.targets}, key: {args.keytype}, canonical size: {len(payload) / 1024 / 1024:.2f} MiB, "
        f"best of {args.repeat}, their runs interleaved"
    )
    print(
        f"reconciler.signing build + canonical_json + sign: {t_ours * 1000:8.1f} ms"
        f"  (canonical_json alone {t_canonical * 1000:.1f} ms)"
    )
    print(
        f"python-tuf Metadata.sign():                   {t_theirs * 1000:8.1f} ms"
        f"  (building its Metadata object {their_build * 1000:.1f} ms, not counted)"
    )
    print(f"ratio ours / python-tuf: {ratio:.2f} of the bests, {median_ratio:.2f} of the medians")
    if ratio > 1 and not args.smoke:
        print("ours is slower than python-tuf", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
