"""Helpers for tests that drive the real CLIs against a local factory and a git release repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from click.testing import CliRunner

from reconciler.cli.reconcile import main as reconcile_main
from reconciler.localfactory import open_embedded
from reconciler.localfactory.cli import main as factory_main

# A wave for the demo factory: build 46 to the canary group. Tests append phases and options.
CANARY_WAVE = """\
apiVersion: reconciler/v1
kind: Wave
name: rel-46
target: 46
tag: production
phases:
  - name: canary
    group: canary
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def init_demo_factory(directory: Path, devices: int, offline_keys: int = 1) -> Path:
    """``reconcile-factory init --demo``; ``offline_keys`` above 1 makes a root that needs that many offline
    targets signatures besides the online key's (one key archive each)."""
    args = ["--local", str(directory), "init", "--demo", "--devices", str(devices), "--start", "2026-11-01T08:00:00Z"]
    result = CliRunner().invoke(
        factory_main, args + (["--offline-keys", str(offline_keys)] if offline_keys > 1 else [])
    )
    assert result.exit_code == 0, result.output
    return directory


def production_uuids(factory_dir: Path, tag: str = "production") -> list[str]:
    """The UUIDs of the tag's production devices in the device list's order, every page."""
    uuids: list[str] = []
    with api(factory_dir) as client:
        page = 1
        while True:
            answer = client.get(
                "/ota/devices/",
                params={"factory": "demo", "match_tag": tag, "prod": 1, "limit": 1000, "page": page},
            ).json()
            uuids += [device["uuid"] for device in answer["devices"]]
            if not answer["next"]:
                return uuids
            page += 1


def reconcile(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(reconcile_main, list(args))
    return result.exit_code, result.stdout, result.stderr


def advance(factory_dir: Path, duration: str) -> None:
    result = CliRunner().invoke(factory_main, ["--local", str(factory_dir), "advance", duration])
    assert result.exit_code == 0, result.output


def api(factory_dir: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=open_embedded(factory_dir).app), base_url="http://factory")


def wave(factory_dir: Path, name: str) -> dict:
    with api(factory_dir) as client:
        return client.get(f"/ota/factories/demo/waves/{name}/").json()


def add_device(factory_dir: Path, name: str, *, tag: str = "production", group: str | None = None) -> str:
    """Register one production device with the factory's CLI; returns its UUID."""
    args = ["--local", str(factory_dir), "devices", "add", name, "--tag", tag]
    result = CliRunner().invoke(factory_main, args + (["--group", group] if group else []))
    assert result.exit_code == 0, result.output
    return result.output.rsplit("(", 1)[1].rstrip(")\n")
