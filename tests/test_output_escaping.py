"""Hostile text in every output format: text plan, JSON, Markdown and stderr (issue 17, item 4).

The manifest loader refuses such names, so these plans are built by hand, as the factory (its
messages, its wave and group names) or a future manifest key could still bring them in.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from reconciler.core import build_plan
from reconciler.errors import Problem, Severity
from reconciler.render import plan as render
from reconciler.safetext import md_cell_code, md_code, md_text, unsafe_character
from tests.helpers.markdown import markdown_syntax
from tests.helpers.planning import active, observed, phase, wave

# A newline that forges a workflow command, ANSI colour, an OSC title change, HTML, backtick runs
# that would close a code span, a right-to-left override and a Cyrillic homoglyph.
EVIL = "x\n::warning file=a::forged \x1b[31mred\x1b]0;pwned\x07 <img src=x> | ``` `` ` \u202eevil v46\u0430"


# A diff of a manifest holding EVIL: every line of a diff starts with its +, - or space.
DIFF = "+" + EVIL.replace("\n", "\n+") + "\n+```\n"


def hostile_plan():
    plan = build_plan(
        [wave(EVIL, 46, [phase(EVIL, group=EVIL)]), wave("v47", 47, [phase("canary", group=EVIL)], tag="lab")],
        observed([active("v47", 47, tag="lab")]),
    )
    problem = Problem(EVIL + ".yaml", 3, 1, EVIL)
    return replace(
        plan,
        errors=(*plan.errors, problem),
        warnings=(*plan.warnings, replace(problem, severity=Severity.WARNING)),
    )


def assert_inert_lines(text: str) -> None:
    for line in text.split("\n"):
        assert unsafe_character(line) is None, repr(line)
        assert not line.lstrip().startswith(("::", "##[")), line


def test_text_plan_escapes_every_value_and_adds_no_line():
    text = render.to_text(hostile_plan(), diffs={EVIL: DIFF})
    assert_inert_lines(text)
    assert "\\u001b[31mred\\u001b]0;pwned\\u0007" in text and "\\u202eevil" in text
    assert "x\\u000a::warning file=a::forged" in text
    assert "v46\u0430" in text  # a letter, shown as it is; the manifest refuses it, naming it


def test_json_plan_stays_valid_and_keeps_the_values_exactly():
    out = render.to_json(hostile_plan())
    assert unsafe_character(out, lines=True) is None and out.isascii()
    data = json.loads(out)
    assert {op["wave"] for op in data["operations"]} >= {EVIL}
    assert data["errors"][-1] == {"message": EVIL, "file": EVIL + ".yaml", "line": 3, "col": 1}


def test_markdown_plan_keeps_values_in_unbreakable_code_spans_and_escapes_the_rest():
    md = render.to_markdown(hostile_plan(), {"commit": "0123456789abcdef"}, diffs={EVIL: DIFF})
    assert_inert_lines(md)
    in_fence = None
    for line in md.split("\n"):
        fence = re.match(r"(`{3,})[^`]*$", line)  # CommonMark: no backtick in a fence's info string
        if fence and (in_fence is None or fence.group(1) == line == in_fence):
            in_fence = None if in_fence else fence.group(1)
            continue
        if in_fence:
            assert not line.startswith(in_fence)
            continue
        syntax = markdown_syntax(line)
        if line.startswith("|"):
            assert syntax.count("|") == 7, line  # six cells, no value adds one
        for tag in re.findall(r"</?[a-z]+", syntax):
            assert tag in ("<details", "</details", "<summary", "</summary"), line
        assert "`" not in syntax.replace("`~`", "").replace("`+`", ""), line
    assert in_fence is None  # every block closed where it was meant to


def test_mermaid_labels_cannot_end_the_node_or_the_block():
    md = render.to_markdown(hostile_plan())
    labels = re.findall(r'\["([^"\n]*)"\]', md)
    assert labels and all(re.fullmatch(r"[A-Za-z0-9_.+\- #;]*", label) for label in labels)
    assert "#96;#96;#96;" in md  # the backticks of EVIL, as entity codes


@given(st.text())
def test_a_code_span_holds_any_text_literally(text):
    span = md_code(text)
    assert "\n" not in span and unsafe_character(span) is None
    fence = re.match(r"`+", span).group()
    inner = span[len(fence) : -len(fence)]
    assert span.endswith(fence) and all(len(run) != len(fence) for run in re.findall(r"`+", inner))
    assert markdown_syntax(span) == ""
    assert markdown_syntax(md_cell_code(text)).count("|") == 0


@given(st.text())
def test_markdown_text_has_no_markup(text):
    syntax = markdown_syntax(md_text(text))
    assert not set(syntax) & set("`*_[]<>|&~@!\\"), syntax


def test_a_newline_in_a_file_name_cannot_forge_a_workflow_command(tmp_path):
    """The issue's case, end to end: reconcile --check in a real process prints the file name escaped."""
    (tmp_path / "x\n::warning file=forged.yaml::owned.yaml").write_text("name: [\n")
    (tmp_path / "::error::pwned.yaml").write_text("kind: Wave\napiVersion: reconciler/v1\nbogus: 1\n")
    reconcile = Path(sys.executable).with_name("reconcile")
    result = subprocess.run([str(reconcile), "--check", "."], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) >= 2
    for line in lines:
        assert not line.lstrip().startswith(("::", "##[")), line
        assert unsafe_character(line) is None
    assert any(line.startswith("x\\u000a::warning file=forged.yaml::owned.yaml:") for line in lines)
    assert any(line.startswith("./::error::pwned.yaml:3:1: unknown key 'bogus'") for line in lines)


def test_problem_lines_escape_the_file_and_the_message():
    line = str(Problem("a\nb\u202e.yaml", 1, 2, "bad \x1b[2J value"))
    assert line == "a\\u000ab\\u202e.yaml:1:2: bad \\u001b[2J value"
    assert str(Problem("##[error]x.yaml", 1, 1, "m")) == "./##[error]x.yaml:1:1: m"


def test_text_and_markdown_plans_show_50_problems_and_a_count():
    plan = hostile_plan()
    many = tuple(Problem(f"w{n:03}.yaml", 3, 1, "bad") for n in range(120))
    plan = replace(plan, errors=many, warnings=())
    text = render.to_text(plan)
    assert text.count(": bad") == 50 and "  ... and 70 more errors (the first 50 are shown)" in text
    markdown = render.to_markdown(plan)
    assert markdown.count(": bad`") == 50 and "- ... and 70 more errors (the first 50 are shown)" in markdown
    assert len(json.loads(render.to_json(plan))["errors"]) == 120


# ------------------------------------------------------------------------------------ reconcile status


def hostile_status():
    """A status report whose factory-side text is hostile: an unmanaged wave's name, its creator, a rollout-by."""
    from datetime import timedelta

    from tests.helpers.planning import NOW
    from tests.helpers.status import SPEC, entry, facts, report

    managed = replace(
        facts("v46", 46, history=[entry("canary", NOW - timedelta(hours=3), 10, by=EVIL)]), created_by=EVIL
    )
    return report([SPEC], [managed, replace(facts(EVIL, 47, tag="lab"), created_by=EVIL)])


def hostile_devices():
    from reconciler.core.status import DeviceFacts, DeviceRow
    from tests.helpers.planning import NOW
    from tests.helpers.status import facts

    device = DeviceFacts(
        uuid="123e4567-e89b-12d3-a456-426614174000",
        name=EVIL,
        group=EVIL,
        last_seen=NOW,
        target_name=EVIL,
        version=46,
        in_wave=True,
    )
    return facts(EVIL, 46), [DeviceRow(device, "pending")], NOW


def test_status_text_escapes_what_the_factory_says():
    from reconciler.render import status as render_status

    wave, rows, now = hostile_devices()
    for text in (render_status.to_text(hostile_status()), render_status.devices(wave, rows, now, "text")):
        assert_inert_lines(text)
        assert "x\\u000a::warning file=a::forged \\u001b[31mred" in text


def test_status_markdown_keeps_names_in_code_spans_and_escapes_the_rest():
    from reconciler.render import status as render_status

    wave, rows, now = hostile_devices()
    for md in (render_status.to_markdown(hostile_status()), render_status.devices(wave, rows, now, "markdown")):
        assert_inert_lines(md)
        cells = set()
        for line in md.split("\n"):
            syntax = markdown_syntax(line)
            assert "<" not in syntax and "`" not in syntax, line
            if line.startswith("|"):
                cells.add(syntax.count("|"))
        assert len(cells) == 1, "every row of the table has as many cells as its header"
        assert f"#### {md_code(EVIL)}: active" in md or f"### Devices of wave {md_code(EVIL)} (" in md


def test_status_json_keeps_the_values_exactly():
    from reconciler.render import status as render_status

    out = render_status.render(hostile_status(), "json")
    assert out.isascii() and EVIL in {w["name"] for w in json.loads(out)["waves"]}


def test_status_escapes_a_factorys_error_message_on_stderr(tmp_path):
    """`reconcile status` printed the factory's error text raw: a newline forged a workflow command."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.helpers.e2e import reconcile

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"message": "denied\n::warning file=a::forged \x1b[31mred\u202e"}).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    (tmp_path / "v46.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Wave\nname: v46\ntarget: 46\ntag: production\n"
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, out, err = reconcile(
            "status", "--api-url", f"http://127.0.0.1:{server.server_port}", "--factory", "acme", str(tmp_path)
        )
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert line.startswith("error: ") and "denied\\u000a::warning file=a::forged \\u001b[31mred\\u202e" in line
    assert unsafe_character(line) is None
