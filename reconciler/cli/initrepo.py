"""``reconcile init-repo DIR --factory NAME``: a release repository a team can start from.

It writes a commented first manifest under ``releases/`` (its ``yaml-language-server`` line
points at a vendored copy of the wave schema, so editors complete and explain every key with
no network and no version drift), the release workflow of ``examples/workflows/`` and a short
README for the team. Nothing is overwritten: every target is checked before the first write,
and one that exists stops the command with nothing written.

The repository works at once: ``git init`` when DIR is in no git work tree yet (an apply reads committed
manifests), and ``next_steps`` prints the commands of a first plan that shows the example wave, against a
local demo factory of the repository's factory name (the first wave's target, 41, is one of its builds).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from reconciler.errors import UserError
from reconciler.resources import read_text, schema_path, workflow_template_path

DEMO_FACTORY = ".demo-factory"  # in the repository, ignored by git: where next_steps puts a local demo factory
_FACTORY = re.compile(r"^[a-zA-Z0-9_.-]+$")
# owner/repo[/path]@ref: where action.yml lives, e.g. acme/reconciler@<40-hex commit>.
# Matched whole (``fullmatch``): ``$`` alone would accept a trailing newline and write broken YAML.
_ACTION = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[A-Za-z0-9_./-]+")
_PINNED = re.compile(r".+@[0-9a-f]{40}")
ACTION_PLACEHOLDER = "OWNER/reconciler@COMMIT_SHA"
# The template's placeholder line ends with a zizmor exemption and a hint, both for the placeholder
# only: a pinned ``--action`` replaces the whole of it.
_PLACEHOLDER_USES = (
    f"{ACTION_PLACEHOLDER} # zizmor: ignore[unpinned-uses] replace with OWNER/REPO@<40-hex SHA> # vX.Y.Z"
)


def pin_warning(action: str) -> str | None:
    """A warning unless ``action`` is pinned by a full commit SHA: a tag or a branch can be moved to
    other code, which then runs in the job that holds the offline key."""
    if _PINNED.fullmatch(action):
        return None
    return (
        f"--action {action!r} is not pinned by a full commit SHA: a tag or branch can be moved; "
        "pin OWNER/REPO@<40-hex commit> and keep the version in a comment"
    )


FIRST_WAVE = """\
# yaml-language-server: $schema=../schemas/wave.schema.json
#
# The first wave of factory {factory}. A wave promotes one CI build to the production devices
# of one tag: first to a few devices, then, once they are fine, to the whole tag.
# Edit it, open a pull request (the plan appears as a comment), merge, approve the
# `production` deployment: the apply job creates the wave and rolls out the first phase;
# the hourly job rolls out the next phases when their gates pass. One file per wave; the
# file name is free. Validate locally with `reconcile --check releases`.
apiVersion: reconciler/v1
kind: Wave
name: first-wave             # unique in the factory and never reused: name it after the build
factory: {factory}           # runs for another factory skip this file
target: 41                   # CHANGE: the CI build (target version) to promote (41: a demo factory's build)
tag: production              # the production device tag the devices follow
# sourceTag: main            # only CI targets of this tag
# expires: 365d              # how long the signed targets stay valid
# prune: [38]                # versions to remove from the tag's production targets
phases:                      # in order; each phase is one rollout
  - name: canary
    group: canary            # CHANGE: one of your device groups (omit group for factory-wide)
    limit: 10                # at most 10 of its devices; or "10%"
  # - name: beta
  #   group: beta
  #   wait: 24h              # gate: time since the previous rollout
  #   require:
  #     updated: 90%         # gate: share of the devices rolled out so far that updated
complete:                    # make it the production version of the whole tag ...
  wait: 48h                  # ... 48 hours after the last phase ...
  require:
    updated: 95%             # ... when 95% of the devices rolled out so far run it
"""

README = """\
# Releases of factory {factory}

Production releases of `{factory}` are wave manifests under `releases/`, applied by the
[wave reconciler](https://github.com/{action_repo}) from `.github/workflows/release.yml`:

- **A pull request** that changes `releases/` gets a plan: a comment saying what would happen
  (create a wave, roll out a phase, complete, cancel) and annotations on mistakes.
- **A merge to main** runs the apply job in the `production` environment: a reviewer approves,
  then the job signs new waves with the offline targets key and runs the ready steps.
- **Every hour** the advance job rolls out the phases whose gates have passed, without the key
  and without approval. A wave that is stuck (drift, an error, expired targets) fails the job
  and opens an issue, which closes itself once the wave moves again.

## Set-up, once

1. Repository variables: `FACTORY` = `{factory}`; `FOUNDRIES_API_URL` = `https://api.foundries.io`.
2. A repository secret `FOUNDRIES_READ_TOKEN`: a Foundries API token with scopes
   `targets:read devices:read` (plans only read).
3. Environment `production` with required reviewers, and its secrets `FOUNDRIES_API_TOKEN`
   (scopes `targets:read-update devices:read`, of an Owner or Admin: only they may create waves)
   and `OFFLINE_TARGETS_KEY`, the fioctl key archive as one line of base64:
   `python3 -m base64 -e targets.only.key.tgz | tr -d '\\n'` (or a KMS key: the action's `signer`).
4. Environment `production-advance` without reviewers, with the secret `FOUNDRIES_API_TOKEN` only.
5. In `.github/workflows/release.yml`, `uses:` names the action pinned to a full commit SHA{pin_note}.

## Working on a release

```sh
reconcile --check releases                    # validate the manifests, no factory needed
reconcile --dry-run --base origin/main releases   # what your branch would do (needs the API URL and a token)
```

`schemas/wave.schema.json` is a copy of the manifest schema: editors with the YAML language server
complete and explain every key. Removing a manifest never cancels a wave; `cancel: true` does.
"""


def init_repo(directory: Path, factory: str, action: str | None) -> list[Path]:
    """Write the repository's files under ``directory``; returns them. Refuses before writing anything."""
    if not _FACTORY.match(factory) or factory in (".", ".."):
        raise UserError(f"factory name {factory!r} may contain only letters, digits, '_', '.' and '-'")
    if action is not None and not _ACTION.fullmatch(action):
        raise UserError(
            f"--action {action!r} must name where action.yml lives as OWNER/REPO@REF, "
            "e.g. acme/reconciler@<full commit SHA>"
        )
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} exists and is not a directory")
    workflow = read_text(workflow_template_path())
    if action is not None:
        workflow = workflow.replace(_PLACEHOLDER_USES, action)
    action_repo = (action or ACTION_PLACEHOLDER).split("@")[0]
    pin_note = "" if action else f" (replace `{ACTION_PLACEHOLDER}`, or run init-repo with `--action`)"
    files = {
        Path("releases/first-wave.yaml"): FIRST_WAVE.format(factory=factory),
        Path("schemas/wave.schema.json"): read_text(schema_path("wave.schema.json")),
        Path(".github/workflows/release.yml"): workflow,
        Path("README.md"): README.format(factory=factory, action_repo=action_repo, pin_note=pin_note),
    }
    files[Path(".gitignore")] = f"/{DEMO_FACTORY}/\n"  # the local demo factory of next_steps, never committed
    existing = [str(directory / path) for path in files if (directory / path).exists()]
    if existing:
        one = len(existing) == 1
        raise UserError(
            f"{', '.join(existing)} already exist{'s' if one else ''}; init-repo never overwrites: "
            f"move {'it' if one else 'them'} away or choose another directory"
        )
    written = []
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def git_init(directory: Path) -> bool | None:
    """``git init`` in ``directory`` unless it is inside a git work tree already (False). None: no git to run,
    and ``next_steps`` says to run it."""
    try:
        inside = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if inside.returncode == 0 and inside.stdout.strip() == "true":
            return False
        subprocess.run(["git", "init", "-q", str(directory)], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return True


def next_steps(directory: Path, factory: str, initialized: bool | None) -> list[str]:
    """The exact commands of a first plan (against a local demo factory named ``factory``: no account, no
    token) and of the first commit, for the person who ran init-repo; each line works as printed."""
    local = shlex.quote(str(directory / DEMO_FACTORY))
    releases = shlex.quote(str(directory / "releases"))
    repo = shlex.quote(str(directory))
    lines = [] if initialized is not None else [f"next: make it a git repository: git init {repo}"]
    return [
        *lines,
        f"next: a first plan against a local demo factory named {factory!r} (no account needed):",
        f"  reconcile-factory --local {local} init --demo --name {shlex.quote(factory)}",
        f"  reconcile --dry-run --local {local} {releases}",
        f"next: an apply reads committed manifests: git -C {repo} add -A && git -C {repo} commit -m 'First wave'",
    ]
