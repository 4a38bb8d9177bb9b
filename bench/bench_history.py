"""A long history: plan and status against a factory holding 10,000 finished waves, over loopback HTTP.

    python bench/bench_history.py [--waves 10000] [--runs 3] [--keep DIR] [--smoke]

Target (issue 26): ``reconcile --dry-run`` and ``reconcile status`` of the README walkthrough's
manifests each take under 1.5 s (best wall time of the whole process) with 10,000 finished waves in the
factory; they took 11.1 s and 10.1 s when every run read the whole history. Exit 1 when missed.
``--smoke``: 50 finished waves and one run, to check the bench itself in a few seconds (no target).

Setup (not timed), in a temporary directory (or DIR with --keep, reused when its factory exists):

- the demo local factory (2,000 devices) and ``examples/releases`` applied to it as the walkthrough
  does (``v42`` and ``v44`` complete, ``v46`` active after its canaries);
- ``--waves`` copies of the finished wave ``v42`` (``v42-copy-00001`` ...: same version, tag, targets,
  rollout history and times), written straight into the factory's database (one INSERT per table,
  then ANALYZE as ``init`` does after its bulk load):
  a factory that has released for years holds thousands, and none of them has a manifest here.

Timed, against ``reconcile-factory serve`` on loopback: the whole ``reconcile --dry-run RELEASES`` and
``reconcile status RELEASES`` processes (``--api-url``), best and median of ``--runs`` (after one
untimed run, ``programenv``), and ``reconcile import DIR --overwrite`` of the active wave (figures only,
no target). Then one in-process run of each over the same HTTP gives the requests it made, by kind (the
wave list pages, single waves, the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_plan import ServedFactory, reconcile_exe
from programenv import program_env

from reconciler.localfactory import demo, store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "releases"
TARGET_SECONDS = 1.5
START = "2026-11-01T08:00:00Z"
SMOKE_WAVES = 50
COPIED = "v42"


def setup(base: Path, copies: int) -> tuple[Path, Path]:
    """The walkthrough's factory and manifests, with ``copies`` finished copies of v42 (module docstring)."""
    factory, releases = base / "factory", base / "releases"
    if store.Store.in_dir(factory).exists():
        return factory, releases
    shutil.copytree(EXAMPLES, releases, dirs_exist_ok=True)
    demo.init_factory(factory, start=store.parse_time(START))
    applied = subprocess.run(
        [reconcile_exe(), str(releases), "--local", str(factory), "--allow-dirty"],
        capture_output=True,
        text=True,
        env=program_env(),
        check=False,
    )
    if applied.returncode != 0:
        raise SystemExit(f"applying the walkthrough failed ({applied.returncode}):\n{applied.stderr[-2000:]}")
    t = time.perf_counter()
    copy_finished_wave(factory, COPIED, copies)
    print(f"setup: {copies:,} copies of {COPIED} written in {time.perf_counter() - t:.2f} s", flush=True)
    return factory, releases


def copy_finished_wave(factory: Path, name: str, copies: int) -> None:
    """``copies`` copies of the finished wave ``name``, rows and all, in one transaction."""
    st = store.Store.in_dir(factory)
    with st.write() as conn:
        (wave_id, *row) = conn.execute(
            "SELECT id, version, tag, signed, signatures, status, created_at, created_by, updated_at, updated_by "
            "FROM waves WHERE name = ?",
            (name,),
        ).fetchone()
        first = conn.execute("SELECT max(id) FROM waves").fetchone()[0] + 1
        ids = range(first, first + copies)
        conn.executemany(
            "INSERT INTO waves(id, name, version, tag, signed, signatures, status, created_at, created_by, "
            "updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((i, f"{name}-copy-{i - first + 1:05d}", *row) for i in ids),
        )
        groups = conn.execute(
            "SELECT group_id, group_name, created_at, created_by, full_group, seq FROM wave_groups WHERE wave_id = ?",
            (wave_id,),
        ).fetchall()
        conn.executemany(
            "INSERT INTO wave_groups(wave_id, group_id, group_name, created_at, created_by, full_group, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((i, *g) for i in ids for g in groups),
        )
        rollouts = conn.execute(
            "SELECT group_id, group_name, rollout_by, rollout_at, is_full_group, is_factory_wide, num_devices "
            "FROM rollouts WHERE wave_id = ? ORDER BY id",
            (wave_id,),
        ).fetchall()
        conn.executemany(
            "INSERT INTO rollouts(wave_id, group_id, group_name, rollout_by, rollout_at, is_full_group, "
            "is_factory_wide, num_devices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((i, *r) for i in ids for r in rollouts),
        )
    with st.write() as conn:
        conn.execute("ANALYZE")  # as init does after its bulk load: the query planner's statistics
    st.close()


def process_cpu(pid: int) -> float:
    """The CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(command: list[str], runs: int, env: dict[str, str], server: int) -> dict:
    """Wall times of ``runs`` runs of the whole process (one untimed run first), and the CPU time of the
    process and of the served factory (pid ``server``) in each: on a shared machine the wall time also
    holds other processes' turns."""
    walls, cpus, served = [], [], []
    for i in range(runs + 1):
        before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), process_cpu(server)
        t = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode not in (0, 2):
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        if i:
            walls.append(wall)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            served.append(process_cpu(server) - server_before)
    return {
        "walls": walls,
        "best": min(walls),
        "median": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "server_cpu": statistics.median(served),
    }


class CountingTransport(httpx.BaseTransport):
    """Counts the requests that pass, by kind: pages of the wave list (by ``status`` filter), single
    waves, the rest."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner
        self.seen: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/waves/"):
            status = request.url.params.get("status")
            self.seen["wave list page" + (f" (status={status})" if status else "")] += 1
        elif re.fullmatch(r"/ota/factories/[^/]+/waves/[^/]+/", path):
            self.seen["single wave"] += 1
        else:
            self.seen["other"] += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def requests_made(url: str, releases: Path) -> dict[str, Counter[str]]:
    """The requests of one plan (with its dry-run device counts), one status and the reads of one import of
    the active waves into an empty directory, in this process, by kind (RECONCILE_API_TOKEN set by the caller)."""
    from reconciler.core import WaveStatus, build_plan
    from reconciler.factory import FactoryClient, read_wave_facts, read_waves, select_backend, wave_list_head
    from reconciler.factory.observe import fill_device_counts, observe
    from reconciler.factory.status import read_status
    from reconciler.manifest import load

    specs = load([str(releases)]).specs
    counts: dict[str, Counter[str]] = {}
    for label in ("plan", "status", "import"):
        backend = select_backend(api_url=url, factory="demo", local=None)
        counting = CountingTransport(backend.transport)
        with FactoryClient(replace(backend, transport=counting)) as client:
            if label == "plan":
                observed = observe(client, specs)
                fill_device_counts(client, build_plan(specs, observed), observed)
            elif label == "status":
                read_status(client, specs)
            else:
                waves = read_waves(client, set(), wave_list_head(client))
                read_wave_facts(client, [w for w in waves if w.status is WaveStatus.ACTIVE])
        counts[label] = counting.seen
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--waves", type=int, default=10_000, help="finished copies of v42 (default 10,000)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per command (default 3)")
    ap.add_argument("--keep", metavar="DIR", help="build the setup in DIR and keep it (reused when it exists)")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_WAVES} waves, one run: checks the bench only")
    args = ap.parse_args()
    if args.smoke:
        args.waves, args.runs = SMOKE_WAVES, 1

    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-history-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        factory, releases = setup(base, args.waves)
        with ServedFactory(factory) as served:
            assert served.process is not None
            pid = served.process.pid
            url = f"http://127.0.0.1:{served.port}"
            env = {**program_env(), "RECONCILE_API_TOKEN": served.token}
            remote = ["--api-url", url, "--factory", "demo"]
            imported = base / "imported"  # each run after the first replaces the manifest the first wrote
            results = {
                "plan": timed([reconcile_exe(), "--dry-run", str(releases), *remote], args.runs, env, pid),
                "status": timed([reconcile_exe(), "status", str(releases), *remote], args.runs, env, pid),
                "import": timed(
                    [reconcile_exe(), "import", str(imported), "--overwrite", *remote], args.runs, env, pid
                ),
            }
            shutil.rmtree(imported, ignore_errors=True)
            shown = json.loads(
                subprocess.run(
                    [reconcile_exe(), "status", str(releases), *remote, "--format", "json"],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                ).stdout
            )["waves"]
            os.environ["RECONCILE_API_TOKEN"] = served.token  # this process's own client, below
            requests = requests_made(url, releases)
        print(f"factory: {args.waves:,} finished copies of {COPIED} besides the walkthrough's waves")
        print(f"status shows: {', '.join(w['name'] + ' ' + w['status'] for w in shown)}")
        print(f"{'':<10}{'best':>9}{'median':>9}{'CPU':>8}{'server':>8}   all runs   requests")
        met = True
        for label, r in results.items():
            runs = " ".join(f"{w:.3f}" for w in r["walls"])
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(requests[label].items()))
            print(
                f"{label:<10}{r['best']:8.3f}s{r['median']:8.3f}s{r['cpu']:7.2f}s{r['server_cpu']:7.2f}s   {runs}   "
                f"{sum(requests[label].values())}: {kinds}"
            )
            met = met and (label == "import" or r["best"] <= TARGET_SECONDS)  # import: no target, figures only
        if args.smoke:
            print("smoke run: no target")
            return 0
        print(f"\ntarget: plan and status each under {TARGET_SECONDS} s (best): {'met' if met else 'MISSED'}")
        return 0 if met else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
