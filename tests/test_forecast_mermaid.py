"""The forecast's Mermaid gantt chart, read by the ``mermaid`` package's own parser (slow: npm installs it).

Names come from pull requests; a ``:`` in a task name would end the name early and a line break would
start a new statement, so the chart must give back exactly the (sanitized) step names and the forecast
times. Skipped where node or npm are absent, or the install fails (offline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.core import CompleteSpec, Gate, forecast
from reconciler.render.plan import gantt, gantt_text
from tests.helpers.planning import HOUR, NOW, phase, wave

pytestmark = pytest.mark.slow

READ_CHART = """\
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
const text = await new Promise((resolve) => {
  let data = '';
  process.stdin.on('data', (chunk) => (data += chunk));
  process.stdin.on('end', () => resolve(data));
});
await mermaid.parse(text);
const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
const tasks = diagram.db.getTasks().map((t) => ({
  task: t.task.trim(), start: t.startTime.toISOString(), end: t.endTime.toISOString(), milestone: !!t.milestone,
}));
console.log(JSON.stringify({ type: diagram.type, title: diagram.db.getDiagramTitle(), tasks }));
"""


@pytest.fixture(scope="module")
def mermaid_dir(tmp_path_factory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run mermaid's parser")
    directory = tmp_path_factory.mktemp("mermaid")
    (directory / "package.json").write_text('{"private": true, "type": "module"}\n')
    try:
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--cache",
                str(directory / "npm-cache"),
                "mermaid@11",
                "jsdom",
            ],
            cwd=directory,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"npm could not install mermaid (offline?): {e}")
    (directory / "read.mjs").write_text(READ_CHART)
    return directory


def _read(directory: Path, chart: str) -> dict:
    body = chart.removeprefix("```mermaid\n").removesuffix("\n```")
    result = subprocess.run(
        ["node", "read.mjs"],
        check=False,
        cwd=directory,
        input=body,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TZ": "UTC"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_mermaid_reads_the_chart_with_every_hostile_name_whole(mermaid_dir):
    hostile = ["eu: canaries #1; x", "line\nbreak", "back`tick, comma", "section evil", "%% comment", "ünï"]
    phases = [phase("canary", group="canary")] + [
        phase(name, group="g", wait=(index + 1) * HOUR) for index, name in enumerate(hostile)
    ]
    spec = wave("v46: #evil;\nsection x", 46, phases, complete=CompleteSpec(Gate(wait_seconds=2 * HOUR)))
    result = forecast(spec, now=NOW)
    read = _read(mermaid_dir, gantt(result))
    assert read["type"] == "gantt" and read["title"] == "v46_ _evil__section x earliest times (UTC)"
    assert [t["task"] for t in read["tasks"]] == [gantt_text(step.step) for step in result.steps]
    stamp = "%Y-%m-%dT%H:%M:%S.000Z"
    assert [t["end"] for t in read["tasks"]] == [step.at.strftime(stamp) for step in result.steps]
    assert read["tasks"][0]["milestone"] and read["tasks"][0]["start"] == NOW.strftime(stamp)
    assert read["tasks"][1]["start"] == NOW.strftime(stamp)
    assert read["tasks"][-1]["end"] == (NOW + timedelta(hours=sum(range(1, 7)) + 2)).strftime(stamp)
