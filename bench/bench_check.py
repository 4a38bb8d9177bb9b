"""How long `reconcile --check` takes on a large release repository.

Generates a release repository of 1,000 wave manifests, each with its own UUID file of
100 to 1,000 UUIDs (about 550,000 UUIDs in all), then runs `reconcile --check` on it as a
subprocess a few times and prints the child's own CPU time (getrusage of the children)
and the wall time. The target is under 1 s of CPU for the whole run, interpreter start
included; a run with nothing but the imports is measured too, for comparison.

    python bench/bench_check.py [--manifests 1000] [--repeat 5] [--against REV] [--smoke]

``--against REV``: REV's ``reconcile --check`` is timed too, on the same repository, its runs alternating
with this tree's, and the ratio of their CPU is printed. A machine's speed moves by 10-20 % within an hour
and about 2x between days (this bench gave 0.73 s for 4558939 on 2026-12-01 and 1.53 s on 2026-12-05),
so a figure from another day compares with nothing; a ratio against a named commit, measured side by
side, does. REV is a commit of this repository (``git archive``, unpacked to a temporary directory and
run from there), as old as 4558939 (``reconciler.cli.main`` then, ``program`` now).

``--smoke``: 20 manifests, one run, figures printed but not judged: the bench still runs
(tests/test_benches.py).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from programenv import program_env  # bench/ is on sys.path when this script runs

REPO = Path(__file__).resolve().parent.parent
TARGET_CPU_SECONDS = 1.0
# As the console script runs it (reconciler.cli.program); a tree from before program() existed: main().
CHECK = (
    "import sys; sys.argv[0] = 'reconcile'; import reconciler.cli as cli; "
    "cli.program() if hasattr(cli, 'program') else sys.exit(cli.main())"
)
IMPORTS_ONLY = "import reconciler.cli.reconcile, reconciler.manifest"

MANIFEST = """\
# yaml-language-server: $schema=../../schemas/wave.schema.json
apiVersion: reconciler/v1
kind: Wave
name: release-{index:04d}
target: {target}
tag: {tag}
expires: {expires}
prune: [{prune}]
phases:
  - name: canary
    group: canary
  - name: beta
    group: beta
    wait: 24h
    require:
      updated: 90%
  - name: picked
    group: eu-emea
    uuids: ../uuids/release-{index:04d}.lst
    wait: 12h
    require: {{updated: 95%}}
  - name: us-east-10
    group: us-east
    limit: 10
    wait: 1d12h
  - name: everyone-else
    limit: "25%"
    wait: 2d
    require:
      updated: 99.5%
complete: {complete}
"""


def generate(root: Path, manifests: int, seed: int = 1) -> int:
    """Writes the repository; returns the number of UUIDs written."""
    rng = random.Random(seed)
    (root / "waves").mkdir(parents=True)
    (root / "uuids").mkdir()
    separators = [", ", "; ", " | ", "\n", " "]
    total = 0
    for index in range(manifests):
        count = rng.randint(100, 1000)
        total += count
        ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]
        text = "".join(value + rng.choice(separators) for value in ids)
        (root / "uuids" / f"release-{index:04d}.lst").write_text(text + "\n")
        last = index == manifests - 1  # one wave stays active; the others are completed
        (root / "waves" / f"release-{index:04d}.yaml").write_text(
            MANIFEST.format(
                index=index,
                target=100 + index,
                tag="production",
                expires=rng.choice(["365d", "52w", "8760h"]),
                prune=", ".join(str(90 + index - k) for k in range(1, 3)),
                complete="false" if last else rng.choice(["true", "{wait: 48h, require: {updated: 98%}}"]),
            )
        )
    return total


def measure(argv: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[float, float, subprocess.CompletedProcess]:
    """(child CPU seconds, wall seconds, result) of one subprocess run (``python -c`` imports from ``cwd`` first)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, result


def unpack(rev: str, into: Path) -> Path:
    """The files of commit ``rev`` of this repository, unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--against {rev}: {archive.stderr.decode(errors='replace').strip()}")
    tree = into / "against"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(tree, filter="data")
        else:
            tar.extractall(tree)  # noqa: S202 - a commit of this repository, not a download
    return tree


def require_own_tree(label: str, tree: Path, env: dict[str, str]) -> None:
    """Stop unless ``reconciler`` imports from ``tree`` with ``env`` (its ``PYTHONPATH``) in ``tree``: else a
    side-by-side run would time one tree twice, and print 1.00."""
    where = subprocess.run(
        [sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
        capture_output=True, text=True, env=env, cwd=tree, check=False,
    )  # fmt: skip
    if not Path(where.stdout.strip()).is_relative_to(tree):
        raise SystemExit(
            f"{label}: reconciler imports from {where.stdout.strip() or where.stderr[-500:]}, not from {tree}"
        )


def side_by_side(command: list[str], trees: dict[str, Path], repeat: int) -> dict[str, list[float]]:
    """CPU seconds of ``command`` run from each tree, alternating (the order swapped every round), after
    one untimed run each (bytecode, page cache). Each runs in its tree, which ``python -c`` imports from
    before ``PYTHONPATH`` and an editable install."""
    envs = {
        label: program_env(PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
        for label, tree in trees.items()
    }
    for label, env in envs.items():
        require_own_tree(label, trees[label], env)
        _, _, result = measure(command, env, trees[label])
        if result.returncode != 0:
            raise SystemExit(f"reconcile --check of {label} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    cpus: dict[str, list[float]] = {label: [] for label in trees}
    order = list(trees)
    for round_ in range(repeat):
        for label in order if round_ % 2 == 0 else reversed(order):
            cpus[label].append(measure(command, envs[label], trees[label])[0])
    return cpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", metavar="REV", help="time commit REV too, side by side, and print the CPU ratio")
    parser.add_argument("--smoke", action="store_true", help="20 manifests, one run, not judged")
    args = parser.parse_args()
    if args.smoke:
        args.manifests, args.repeat = 20, 1
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        against = unpack(args.against, Path(tmp)) if args.against else None
        root = Path(tmp) / "releases"
        total = generate(root, args.manifests)
        size = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
        print(f"repository: {args.manifests} manifests, {total} UUIDs, {size / 1e6:.1f} MB in {root}")
        # Compiled bytecode as an installed package has it, cached outside the repository (programenv).
        env = program_env(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-c", CHECK, "--check", str(root)]
        print("command: reconcile --check", root)
        measure(command, env)  # warm-up: bytecode cache, page cache
        runs = []
        for _ in range(args.repeat):
            cpu, wall, result = measure(command, env)
            if result.returncode != 0:
                print(result.stdout, result.stderr, sep="\n")
                print(f"reconcile --check failed with exit code {result.returncode}")
                return 1
            runs.append((cpu, wall))
        imports = [measure([sys.executable, "-c", IMPORTS_ONLY], env)[:2] for _ in range(args.repeat)]
        if against is not None:
            pairs = side_by_side(command, {"this tree": REPO, args.against: against}, args.repeat)
    print(f"output: {result.stdout.strip()}")
    for label, figures in (("reconcile --check", runs), ("interpreter + imports only", imports)):
        cpus, walls = [cpu for cpu, _ in figures], [wall for _, wall in figures]
        print(
            f"{label}: CPU best {min(cpus):.3f} s, median {statistics.median(cpus):.3f} s; "
            f"wall best {min(walls):.3f} s, median {statistics.median(walls):.3f} s ({len(figures)} runs)"
        )
    if against is not None:
        for label, cpus in pairs.items():
            print(f"side by side, {label}: CPU best {min(cpus):.3f} s, median {statistics.median(cpus):.3f} s")
        this, that = pairs["this tree"], pairs[args.against]
        print(
            f"this tree / {args.against}: CPU ratio {min(this) / min(that):.2f} of the bests, "
            f"{statistics.median(this) / statistics.median(that):.2f} of the medians ({args.repeat} runs each, alternating)"
        )
    best = min(cpu for cpu, _ in runs)
    verdict = "met" if best < TARGET_CPU_SECONDS else "MISSED"
    print(f"target: under {TARGET_CPU_SECONDS:.1f} s CPU for reconcile --check: {verdict}")
    return 0 if best < TARGET_CPU_SECONDS or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
