"""Planning at scale: ``reconcile --dry-run`` over 500 manifests against a 100,000-device local factory.

    python bench/bench_plan.py [--devices 100000] [--keep DIR] [--runs 5] [--no-git] [--profile] [--rtt MS ...]
                               [--tls [--tls12]] [--against REV] [--smoke]

Target (issue): planning 500 manifests (20 active waves) against a 100,000-device local factory takes
under 2 s wall time for the whole process. Exit 1 when the best wall time is over 2 s.

Setup (not timed), in a temporary directory (or DIR with --keep, which is reused when it exists):

- a demo local factory: ``init_factory`` with the production devices split over 20 tags
  (``production`` keeps most of them, ``fleet-01`` .. ``fleet-19`` get ``devices // 100`` each, in the
  demo groups), and CI builds 61..65 besides the demo's 40..60;
- per tag, 24 waves already complete in the factory (versions 41..64; canary phase, then complete;
  each prunes the version three below so production targets stay small), created through the
  factory's HTTP API in-process with an offline signature from ``reconciler.signing``, exactly as
  ``apply`` sends them;
- per tag, one active wave (version 65) created by the reconciler itself (``reconcile --allow-dirty``)
  which rolls out its first one or two phases; the next phase is gated by ``wait`` and/or
  ``require.updated`` (so the plan makes status calls); then the simulated clock advances two days so
  that some gates pass and the plan asks the factory for dry-run device counts;
- the 500 manifests live in a git repository with one commit (a release repository), so the run
  includes provenance as it would in CI (``--no-git``: plain directory).

Timed: the whole process ``reconcile --dry-run MANIFESTS --local FACTORY`` (text, then ``--format json``),
best and median wall time of ``--runs`` runs and the child CPU time. Then one in-process run of the same
pipeline (cli.run -> _plan_and_apply) gives the split per stage and the number of HTTP requests.
With ``--profile``, or when the target is missed: ``-X importtime`` and a cProfile of a fresh process.

With ``--rtt MS`` (repeatable): the same plan over a network. ``reconcile-factory serve`` serves the
factory on loopback behind ``latency_proxy.LatencyProxy`` (every chunk delayed MS/2 each way), and the
whole ``reconcile --dry-run --api-url`` process is timed: wall time, HTTP requests, connections and
the longest chain of requests that waited on each other (round trips paid one after the other).
Targets (issue 14): under 1.0 s at 100 ms and under 2.5 s at 300 ms; a chain of at most 5.
``--against REV`` (with ``--rtt``): commit REV's reconciler is timed too (``git archive``, as
``bench_check.py --against``), its runs alternating with this tree's over the same proxy, server and data,
and the ratio printed: the machine's speed moves by up to half between hours, and this figure is CPU.
With ``--tls`` the proxy speaks HTTPS with a certificate from a CA made for the run (the client trusts it
through ``SSL_CERT_FILE``), so every new connection pays its handshake too (``--tls12``: TLS 1.2, two
round trips; else 1.3, one); the targets are the same (issue 26).

``--smoke``: 4 tags of 4 completed waves and one active wave each over 10,000 devices, one run, the local
plan and then one over TLS at 10 ms: the bench still runs, in seconds (tests/test_benches.py); the
figures are printed, not judged.

Every timed ``reconcile`` runs as an installed copy runs: with its bytecode compiled (``programenv``;
one untimed run first), not recompiling the package on each start as an editable checkout does where
``PYTHONDONTWRITEBYTECODE`` is set.
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_check import require_own_tree, unpack  # bench/ is on sys.path when this script runs
from latency_proxy import LatencyProxy, ThrowawayCA
from programenv import program_env

from reconciler import signing
from reconciler.factory.client import FactoryClient, select_backend
from reconciler.localfactory import demo, devices, fleet, store, targets

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 2.0
TAGS = ["production"] + [f"fleet-{k:02d}" for k in range(1, 20)]  # 20 tags: one active wave each
DONE_VERSIONS = range(41, 65)  # 24 completed waves per tag: 480 in all
ACTIVE_VERSION = 65  # one active wave per tag: 20
NEW_BUILDS = range(61, ACTIVE_VERSION + 1)  # the demo has CI builds 40..60
START = "2026-01-05T12:00:00Z"
ADVANCE = 2 * 86400  # after the active waves' first phases: 2 days of simulated fleet
SEED = 42
PRUNE_BEHIND = 3  # each completed wave prunes the version this far below it


WARM_UP = True  # one untimed run before the timed ones (programenv); not in a smoke run


def shrink_for_smoke() -> None:
    """The setup at smoke size (``--smoke``): 4 tags, 4 completed waves each (16 in all); no warm-up runs."""
    global TAGS, DONE_VERSIONS, WARM_UP  # noqa: PLW0603  # the bench's constants, set before anything reads them
    TAGS = TAGS[:4]
    DONE_VERSIONS = range(DONE_VERSIONS[0], DONE_VERSIONS[0] + 4)
    WARM_UP = False


# ------------------------------------------------------------------------------------ setup: factory


def build_factory(path: Path, devices_total: int) -> dict:
    """The demo factory with ``devices_total`` production devices over 20 tags, and CI builds up to 65."""
    per_tag = max(10, devices_total // 100)
    main_n = devices_total - per_tag * (len(TAGS) - 1)
    demo.init_factory(path, devices_n=main_n, seed=SEED, start=store.parse_time(START))
    st = store.Store.in_dir(path)
    with st.write() as conn:
        for version in NEW_BUILDS:
            targets.add_ci_build(conn, version, list(demo.HWIDS), ["main", "devel"])
        for tag in TAGS[1:]:
            devices.add_devices(
                conn,
                [
                    devices.NewDevice(
                        name=f"{tag}-{i:06d}",
                        uuid=tag_device_uuid(tag, i),
                        tag=tag,
                        hwid=demo.HWIDS[i % 2],
                        version=40,
                        production=True,
                        group=demo.demo_group(i),
                    )
                    for i in range(per_tag)
                ],
                "bench",
            )
        conn.execute("ANALYZE")
    st.close()
    return {"production": main_n, "per_tag": per_tag, "total": main_n + per_tag * (len(TAGS) - 1)}


def tag_device_uuid(tag: str, i: int) -> str:
    """Deterministic UUIDs for the devices of the extra tags (so UUID files can name them)."""
    return demo.demo_uuid(SEED, i, kind=f"bench-{tag}")


def first_version(tag: str) -> int:
    """The lowest version in a tag's production targets once its first completed wave is in."""
    return 40 if tag == "production" else DONE_VERSIONS[0]


def prune_for(tag: str, version: int) -> list[int]:
    """What a completed wave prunes: the version PRUNE_BEHIND below it, once the tag has it."""
    old = version - PRUNE_BEHIND
    return [old] if old >= first_version(tag) else []


def create_completed_waves(path: Path) -> int:
    """Create, roll out (group canary) and complete the 480 completed waves through the HTTP API (in-process).

    The same requests ``apply`` sends: the wave's targets are built with ``signing.build_wave_targets``
    from the CI and production targets the API returns, and signed with the operator's offline key.
    Returns the number of requests.
    """
    backend = select_backend(api_url=None, factory=None, local=str(path))
    with FactoryClient(backend) as client:
        root, online = client.root(), client.online_targets_key()
        signer = signing.find_offline_signer(root, signing.load_key_archive_file(backend.keys_archive), online)
        expires = client.server_now() + timedelta(days=365)
        ci = {v: client.ci_targets(v) for v in DONE_VERSIONS}
        for tag in TAGS:
            prod = client.prod_targets([tag]).get(tag)
            for version in DONE_VERSIONS:
                name = wave_name(tag, version)
                signed = signing.build_wave_targets(
                    ci_targets=ci[version],
                    prod_targets=prod,
                    version=version,
                    tag=tag,
                    prune=prune_for(tag, version),
                    expires=expires,
                )
                payload = signing.canonical_json(signed)
                client.create_wave(
                    name=name, version=version, tag=tag, signed=payload, signatures=[signer.sign_bytes(payload)]
                )
                client.rollout(
                    name, {"group": "canary", "dry-run": False, "return-uuids": False, "return-names": False}
                )
                client.complete(name)
                prod = {"signed": signed}  # what complete made the tag's production targets
        return client.requests


def advance(path: Path, seconds: int) -> dict:
    """Move the factory's simulated clock forward; devices check in and update."""
    st = store.Store.in_dir(path)
    with st.write() as conn:
        stats = fleet.advance(conn, seconds)
    st.close()
    return stats


# ------------------------------------------------------------------------------------ setup: manifests


def wave_name(tag: str, version: int) -> str:
    return f"{tag}-v{version}"


def completed_manifest(tag: str, version: int) -> str:
    """A wave that went to the canaries, then to everyone: the record a release repository keeps."""
    prune = prune_for(tag, version)
    return (
        f"apiVersion: reconciler/v1\nkind: Wave\nname: {wave_name(tag, version)}\ntarget: {version}\n"
        f"tag: {tag}\n"
        + (f"prune: [{', '.join(map(str, prune))}]\n" if prune else "")
        + "phases:\n  - name: canary\n    group: canary\ncomplete: true\n"
    )


# The active waves, by tag index modulo 4. The first phases (no gate) are rolled out in setup; the next
# one is gated. After two simulated days: kind 0's `wait` has passed (ready: a dry-run device count);
# kind 1 needs the wave status (80% updated of the canaries and 10 beta devices: ready); kind 2 needs
# the status too but waits 3 days (blocked, 1d left); kind 3's factory-wide limit is ready.
ACTIVE_KINDS = [
    """phases:
  - name: canary
    group: canary
  - name: beta
    group: beta
    wait: 24h
  - name: us-east-10
    group: us-east
    limit: 10
    wait: 12h
    require:
      updated: 90%
  - name: us-east
    group: us-east
    wait: 1d
    require:
      updated: 95%
  - name: eu-emea-10pc
    group: eu-emea
    limit: 10%
    wait: 1d
complete:
  wait: 2d
  require:
    updated: 98%
""",
    """phases:
  - name: canary
    group: canary
  - name: beta-10
    group: beta
    limit: 10
  - name: beta
    group: beta
    wait: 12h
    require:
      updated: 80%
  - name: eu-canaries
    group: eu-emea
    uuids: uuids/eu-canaries.lst
    wait: 1d
    require:
      updated: 95%
  - name: apac
    group: apac
    wait: 1d
""",
    """phases:
  - name: canary
    group: canary
  - name: beta
    group: beta
    wait: 3d
    require:
      updated: 100%
  - name: us-west-5pc
    group: us-west
    limit: 5%
complete: true
""",
    """phases:
  - name: canary
    group: canary
  - name: us-east-1pc
    group: us-east
    limit: 1%
  - name: anywhere-10
    limit: 10
    wait: 6h
  - name: us-east
    group: us-east
    wait: 2d
    require:
      updated: 90%
complete:
  wait: 7d
""",
]


def active_manifest(index: int, tag: str) -> str:
    return (
        f"apiVersion: reconciler/v1\nkind: Wave\nname: {wave_name(tag, ACTIVE_VERSION)}\n"
        f"target: {ACTIVE_VERSION}\ntag: {tag}\nexpires: 180d\n" + ACTIVE_KINDS[index % len(ACTIVE_KINDS)]
    )


def eu_canaries(tag: str, count: int = 6) -> list[str]:
    """UUIDs of the first ``count`` eu-emea devices of an extra tag."""
    picked, i = [], 0
    while len(picked) < count:
        if demo.demo_group(i) == "eu-emea":
            picked.append(tag_device_uuid(tag, i))
        i += 1
    return picked


def write_manifests(root: Path) -> int:
    """500 manifest files: ``waves/<tag>/<wave>.yaml``, 25 per tag, and the UUID files they name."""
    n = 0
    for index, tag in enumerate(TAGS):
        folder = root / "waves" / tag
        folder.mkdir(parents=True, exist_ok=True)
        for version in DONE_VERSIONS:
            (folder / f"{wave_name(tag, version)}.yaml").write_text(completed_manifest(tag, version))
            n += 1
        (folder / f"{wave_name(tag, ACTIVE_VERSION)}.yaml").write_text(active_manifest(index, tag))
        n += 1
        if "uuids/" in ACTIVE_KINDS[index % len(ACTIVE_KINDS)]:
            (folder / "uuids").mkdir(exist_ok=True)
            (folder / "uuids" / "eu-canaries.lst").write_text("\n".join(eu_canaries(tag)) + "\n")
    return n


def git_commit(root: Path) -> None:
    """Make the manifest directory a release repository with one commit (its own, temporary repository)."""
    git = [
        "git",
        "-C",
        str(root),
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@example.invalid",
        "-c",
        "commit.gpgsign=false",
    ]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "500 wave manifests"]):
        subprocess.run(git + args, check=True)


# ------------------------------------------------------------------------------------ running reconcile


def reconcile_exe() -> str:
    """The ``reconcile`` console script of this interpreter (not a pyenv shim, which adds a bash process)."""
    here = Path(sys.executable).parent / "reconcile"
    return str(here) if here.exists() else (shutil.which("reconcile") or "reconcile")


def run_reconcile(args: list[str], check: bool = True, exe: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [exe or reconcile_exe(), *args], capture_output=True, text=True, env=program_env(), check=False
    )
    if check and result.returncode != 0:
        raise SystemExit(f"reconcile {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def apply_active_waves(manifests: Path, factory: Path) -> str:
    """The reconciler creates the 20 active waves and rolls out their ungated first phases."""
    result = run_reconcile([str(manifests), "--local", str(factory), "--allow-dirty"])
    return result.stderr.strip().splitlines()[-1]


def timed_runs(args: list[str], runs: int, exe: str | None = None) -> dict:
    """Wall and child CPU time of ``runs`` runs of ``reconcile ARGS`` (each a fresh process)."""
    walls, cpus, out = [], [], None
    if WARM_UP:
        run_reconcile(args, exe=exe)  # untimed: fills the bytecode cache (programenv) and the page cache
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = run_reconcile(args, exe=exe)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return {
        "walls": walls,
        "best": min(walls),
        "median": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "cpu_best": min(cpus),
        "stdout": out.stdout,
    }


# ------------------------------------------------------------------------------------ in-process split


def in_process(manifests: Path, factory: Path) -> dict:
    """The CLI pipeline in this (warm) process, stage by stage, with the HTTP requests it sends."""
    from reconciler import manifest
    from reconciler.core import RolloutOp, build_plan
    from reconciler.factory.observe import fill_device_counts, observe
    from reconciler.render import plan as render

    times: dict[str, float] = {}

    def stage(label, fn):
        t = time.perf_counter()
        value = fn()
        times[label] = time.perf_counter() - t
        return value

    paths = [str(manifests)]
    source, provenance = stage("git provenance", lambda: manifest.git_context(paths, rev=None, require_clean=False))
    loaded = stage("load manifests", lambda: manifest.load(paths, source=source))
    backend = stage("open local factory", lambda: select_backend(api_url=None, factory=None, local=str(factory)))
    with FactoryClient(backend) as client:
        observed = stage("observe", lambda: observe(client, loaded.specs))
        observe_requests = client.requests
        plan = stage("plan", lambda: build_plan(loaded.specs, observed))
        plan = stage("dry-run device counts", lambda: fill_device_counts(client, plan))
        stage("render text", lambda: render.to_text(plan))
        stage("render json", lambda: render.to_json(plan, provenance))
        requests = client.requests
    ops = plan.operations
    return {
        "times": times,
        "requests": requests,
        "observe_requests": observe_requests,
        "count_requests": requests - observe_requests,
        "specs": len(loaded.specs),
        "files": loaded.files,
        "ops": len(ops),
        "ready": sum(op.ready for op in ops),
        "blocked": sum(not op.ready for op in ops),
        "status_calls": len(observed.progress),
        "waves_observed": len(observed.waves),
        "active": sum(w.status == "active" for w in observed.waves.values()),
        "counted": sum(isinstance(op, RolloutOp) and op.devices is not None for op in ops),
        "errors": len(plan.errors),
        "warnings": len(plan.warnings),
    }


# ------------------------------------------------------------------------------------ profiling

RUNNER = "import sys; sys.argv[0] = 'reconcile'; from reconciler.cli.reconcile import main; main()"
PROFILER = """
import cProfile, sys
out = sys.argv[1]
sys.argv = ['reconcile'] + sys.argv[2:]
profile = cProfile.Profile()
profile.enable()
try:
    from reconciler.cli.reconcile import main
    main()
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def import_times(args: list[str]) -> list[tuple[int, int, int, str]]:
    """``python -X importtime`` of the dry run: (self us, cumulative us, depth, module) per import."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", RUNNER, *args],
        capture_output=True,
        text=True,
        env=program_env(),
        check=False,
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cumulative, name = line.split("|", 2)
        self_us = head.split(":", 1)[1]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((int(self_us), int(cumulative), depth, name.strip()))
    return rows


def print_import_profile(args: list[str], top: int = 14) -> None:
    rows = import_times(args)
    total = sum(r[0] for r in rows)
    print(f"\n-X importtime: {total / 1e6:.3f} s in imports ({len(rows)} modules)")
    print("  top-level imports by cumulative time:")
    for _self_us, cumulative, _depth, name in sorted((r for r in rows if r[2] == 0), key=lambda r: -r[1])[:top]:
        print(f"    {cumulative / 1e3:8.1f} ms  {name}")
    print("  largest imports at any depth (cumulative):")
    for _self_us, cumulative, depth, name in sorted(rows, key=lambda r: -r[1])[:top]:
        print(f"    {cumulative / 1e3:8.1f} ms  {'  ' * depth}{name}")


def print_cprofile(args: list[str], workdir: Path, top: int = 30) -> None:
    """cProfile of one fresh ``reconcile`` process (imports included), by cumulative and own time."""
    out = workdir / "dry-run.prof"
    subprocess.run(
        [sys.executable, "-c", PROFILER, str(out), *args],
        capture_output=True,
        text=True,
        env=program_env(),
        check=False,
    )
    stats = pstats.Stats(str(out), stream=io.StringIO())
    entries = stats.stats  # (file, line, func) -> (cc, nc, tt, ct, callers)

    def label(key) -> str:
        file, line, func = key
        for marker in ("site-packages/", "/lib/python3", "/work/main/"):
            if marker in file:
                file = file.split(marker, 1)[1]
        return f"{file}:{line}({func})"

    total = max(ct for _, _, _, ct, _ in entries.values())
    print(f"\ncProfile of one process ({total:.3f} s profiled, with profiler overhead)")
    print("  by cumulative time:")
    for key, (_cc, nc, tt, ct, _) in sorted(entries.items(), key=lambda kv: -kv[1][3])[:top]:
        print(f"    {ct:7.3f} s cum {tt:7.3f} s own {nc:>8} calls  {label(key)}")
    print("  by own time:")
    for key, (_cc, nc, tt, ct, _) in sorted(entries.items(), key=lambda kv: -kv[1][2])[: top // 2]:
        print(f"    {tt:7.3f} s own {ct:7.3f} s cum {nc:>8} calls  {label(key)}")


# ------------------------------------------------------------------------------------ main


def setup(base: Path, devices_n: int, use_git: bool) -> tuple[Path, Path, dict]:
    """Build (or reuse) the factory and the manifests under ``base``; returns their paths and figures."""
    factory, manifests = base / "factory", base / "releases"
    if (base / "setup.json").exists():
        print(f"reusing the setup in {base}", flush=True)
        return factory, manifests, json.loads((base / "setup.json").read_text())
    figures: dict = {}
    t0 = time.perf_counter()
    t = time.perf_counter()
    figures["devices"] = build_factory(factory, devices_n)
    print(
        f"factory: {figures['devices']['total']:,} production devices ({figures['devices']['production']:,} on "
        f"production, {figures['devices']['per_tag']:,} on each of {len(TAGS) - 1} more tags) "
        f"in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    figures["manifests"] = write_manifests(manifests)
    t = time.perf_counter()
    requests = create_completed_waves(factory)
    print(
        f"completed waves: {len(TAGS) * len(DONE_VERSIONS)} created, rolled out and completed "
        f"({requests:,} requests) in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    t = time.perf_counter()
    summary = apply_active_waves(manifests, factory)
    print(f"active waves: reconcile applied in {time.perf_counter() - t:.1f} s: {summary}", flush=True)
    t = time.perf_counter()
    stats = advance(factory, ADVANCE)
    print(f"advance 2d: {stats['updated']:,} devices updated in {time.perf_counter() - t:.1f} s", flush=True)
    if use_git:
        git_commit(manifests)
    figures["git"] = use_git
    figures["seconds"] = time.perf_counter() - t0
    (base / "setup.json").write_text(json.dumps(figures))
    print(f"setup: {figures['seconds']:.1f} s", flush=True)
    return factory, manifests, figures


RTT_TARGETS = {100: 1.0, 300: 2.5}  # round trip (ms) -> wall-time target (s); issue 14
CHAIN_TARGET = 5


class ServedFactory:
    """``reconcile-factory serve`` on a free loopback port, with an API token; stopped on exit."""

    def __init__(self, factory: Path):
        self.factory = factory
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.token = ""

    def __enter__(self) -> Self:
        cli = [sys.executable, "-m", "reconciler.localfactory", "--local", str(self.factory)]
        self.token = (
            subprocess.run(
                [*cli, "token", "--name", "bench"], capture_output=True, text=True, check=True, env=program_env()
            )
            .stdout.strip()
            .split()[-1]
        )
        self.process = subprocess.Popen(
            [*cli, "serve", "--port", "0", "--threads", "32"], stderr=subprocess.PIPE, text=True, env=program_env()
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        self.port = int(line.split("http://127.0.0.1:", 1)[1].split()[0].rstrip(",)"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


def over_network(
    factory: Path,
    command: list[str],
    rtts: list[int],
    runs: int,
    tls: ThrowawayCA | None = None,
    tls12: bool = False,
    targets: dict[int, float] = RTT_TARGETS,
    against: tuple[str, Path] | None = None,
    emptied: Path | None = None,
) -> bool:
    """``reconcile COMMAND`` (the dry-run plan: ``--dry-run MANIFESTS``) against the served factory through
    a delaying proxy: wall time, requests, connections, longest chain; whether ``targets`` were met.
    ``against``: another tree of the reconciler (a commit's, ``--against``), timed too, its runs alternating
    with this tree's on the same proxy, server and data; its ratio to this tree is printed, not judged.
    ``emptied``: a directory emptied before every run (an import's: each run writes its manifests there)."""

    def empty() -> None:
        if emptied is not None:
            shutil.rmtree(emptied, ignore_errors=True)
            emptied.mkdir(parents=True)

    met = True
    with ServedFactory(factory) as served:
        env = {**program_env(), "RECONCILE_API_TOKEN": served.token}
        if tls is not None:
            env["SSL_CERT_FILE"] = str(tls.ca_file)  # httpx's default context trusts it (latency_proxy)
        envs, trees = {"this tree": env}, {"this tree": REPO}
        if against is not None:
            trees = dict([("this tree", REPO), against])
            envs = {label: {**env, "PYTHONPATH": str(tree)} for label, tree in trees.items()}
        warm_up = [reconcile_exe(), *command, "--api-url", f"http://127.0.0.1:{served.port}", "--factory", "demo"]
        for label, tree_env in envs.items():
            if against is not None:  # else both would time the installed tree
                require_own_tree(label, trees[label], tree_env)
            if WARM_UP:
                empty()
                subprocess.run(warm_up, capture_output=True, env=tree_env, check=False)  # untimed: bytecode cache
        for rtt in rtts:
            with LatencyProxy(served.port, rtt_ms=rtt, tls=tls, tls12=tls12) as proxy:
                args = [reconcile_exe(), *command, "--api-url", proxy.url, "--factory", "demo"]
                walls: dict[str, list[float]] = {label: [] for label in envs}
                requests, chains, connections = [], [], []
                order = list(envs)
                for round_ in range(runs):
                    for label in order if round_ % 2 == 0 else reversed(order):
                        empty()
                        proxy.reset()
                        t = time.perf_counter()
                        result = subprocess.run(args, capture_output=True, text=True, env=envs[label], check=False)
                        walls[label].append(time.perf_counter() - t)
                        if result.returncode not in (0, 2):
                            raise SystemExit(
                                f"reconcile ({label}) over the proxy failed ({result.returncode}):\n{result.stderr[-2000:]}"
                            )
                        if label == "this tree":
                            requests.append(len(proxy.exchanges))
                            chains.append(proxy.longest_chain())
                            connections.append(proxy.connections)
            best = min(walls["this tree"])
            target = targets.get(rtt)
            verdict = "" if target is None else f"  target {target:.1f} s: {'met' if best <= target else 'MISSED'}"
            scheme = "plain HTTP" if tls is None else ("TLS 1.2" if tls12 else "TLS 1.3")
            print(
                f"rtt {rtt:>4} ms, {scheme}: wall best {best:.3f} s, median {statistics.median(walls['this tree']):.3f} s "
                f"({runs} runs); {statistics.median(requests):.0f} requests over {statistics.median(connections):.0f} "
                f"connection(s); longest chain {max(chains)} (target {CHAIN_TARGET}){verdict}",
                flush=True,
            )
            if against is not None:
                other = walls[against[0]]
                print(
                    f"  {against[0]}, alternating: wall best {min(other):.3f} s, median {statistics.median(other):.3f} s; "
                    f"this tree / {against[0]}: {best / min(other):.2f} of the bests, "
                    f"{statistics.median(walls['this tree']) / statistics.median(other):.2f} of the medians",
                    flush=True,
                )
            met = met and (target is None or best <= target) and max(chains) <= CHAIN_TARGET
    return met


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000, help="production devices in all (default 100,000)")
    ap.add_argument("--keep", metavar="DIR", help="build the setup in DIR and keep it (reused when it exists)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per format (default 5)")
    ap.add_argument("--no-git", action="store_true", help="manifests in a plain directory, not a git repository")
    ap.add_argument("--profile", action="store_true", help="profile even when the target is met")
    ap.add_argument(
        "--rtt",
        type=int,
        action="append",
        metavar="MS",
        help="also plan over HTTP through a proxy adding MS ms round trip (repeatable), then stop",
    )
    ap.add_argument("--tls", action="store_true", help="with --rtt: HTTPS through the proxy (a throwaway CA)")
    ap.add_argument("--tls12", action="store_true", help="with --tls: TLS 1.2 (two handshake round trips)")
    ap.add_argument(
        "--against",
        metavar="REV",
        help="with --rtt: time commit REV too, its runs alternating with this tree's, and print the ratio",
    )
    ap.add_argument("--smoke", action="store_true", help="a tiny setup and one run of each: does the bench run?")
    args = ap.parse_args()
    if args.against and not args.rtt:
        ap.error("--against works with --rtt")
    if args.smoke:
        shrink_for_smoke()
        args.devices, args.runs = 10_000, 1  # 100 devices per extra tag: 6 of them in eu-emea (eu_canaries)

    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-plan-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        factory, manifests, figures = setup(base, args.devices, not args.no_git)
        tls = ThrowawayCA(base / "tls") if args.tls or args.tls12 or args.smoke else None
        if args.rtt:
            dry_run = ["--dry-run", str(manifests)]
            against = (args.against, unpack(args.against, base / "against")) if args.against else None
            try:
                return 0 if over_network(factory, dry_run, args.rtt, args.runs, tls, args.tls12, against=against) else 1
            finally:
                shutil.rmtree(base / "against", ignore_errors=True)
        dry = ["--dry-run", str(manifests), "--local", str(factory)]

        print(f"\ntimed: {reconcile_exe()} {' '.join(dry)}", flush=True)
        text = timed_runs(dry, args.runs)
        as_json = timed_runs([*dry, "--format", "json"], args.runs)
        on_path = shutil.which("reconcile")
        via_path = None
        if on_path and Path(on_path).resolve() != Path(reconcile_exe()).resolve():
            via_path = timed_runs(dry, args.runs, exe=on_path)  # e.g. a pyenv shim: one more process
        plan = json.loads(as_json["stdout"])
        split = in_process(manifests, factory)

        ready = sum(op["status"] == "ready" for op in plan["operations"])
        print(
            f"manifests: {figures['manifests']} files, {split['specs']} waves "
            f"({split['active']} active in the factory of {split['waves_observed']} waves)"
        )
        print(
            f"plan: {len(plan['operations'])} operations ({ready} ready, {len(plan['operations']) - ready} blocked), "
            f"{split['counted']} with dry-run device counts, {len(plan['warnings'])} warnings, "
            f"{len(plan['errors'])} errors"
        )
        print(
            f"HTTP requests: {split['requests']} ({split['observe_requests']} to observe, of which "
            f"{split['status_calls']} wave status; {split['count_requests']} dry-run rollouts)"
        )
        print(f"{'':<26}{'best':>9}{'median':>9}{'CPU':>9}   all runs")
        rows = [("wall, text output", text), ("wall, --format json", as_json)]
        if via_path:
            rows.append((f"wall, {on_path}", via_path))
        for label, r in rows:
            runs = " ".join(f"{w:.3f}" for w in r["walls"])
            print(f"{label:<26}{r['best']:8.3f}s{r['median']:8.3f}s{r['cpu']:8.3f}s   {runs}")
        print("in-process split (warm, this process):")
        for label, seconds in split["times"].items():
            print(f"  {label:<24}{seconds:8.3f} s")
        print(f"  {'total':<24}{sum(split['times'].values()):8.3f} s")

        best = min(text["best"], as_json["best"])
        met = best <= TARGET_SECONDS
        print(
            f"\ntarget: best wall {best:.3f} s {'<=' if met else '>'} {TARGET_SECONDS:.0f} s: "
            f"{'met' if met else 'MISSED'}"
        )
        if args.smoke:
            over_network(factory, ["--dry-run", str(manifests)], [10], 1, tls)
            return 0
        if args.profile or not met:
            print_import_profile(dry)
            print_cprofile(dry, base)
        return 0 if met else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
