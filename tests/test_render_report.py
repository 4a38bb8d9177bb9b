"""The HTML status page (render/report.py), read back with the standard library's HTML parser: its numbers
are the status JSON's, its bars are drawn to them, and no name from a pull request can make it act."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from msgspec.structs import replace

from reconciler.core import FORECAST_TITLE, forecast_dict, format_duration
from reconciler.core.spec import CompleteSpec, Gate, Limit, Location
from reconciler.core.status import ScopeCounts, build_status
from reconciler.core.windows import Freeze, Schedule, Window
from reconciler.render.report import BAR_WIDTH, forecast_of, page
from reconciler.render.status import to_dict, to_text
from reconciler.safetext import printable
from tests.helpers.e2e import CANARY_WAVE, commit, git, init_demo_factory, reconcile
from tests.helpers.planning import HOUR, NOW, phase, wave
from tests.helpers.status import counts, entry, facts

NUMBERS = ("reached", "devices", "updated", "pending", "offline", "failed")


class Page(HTMLParser):
    """The page as a reader meets it: per wave its title, phases (numbers and bar rectangles), gate and
    history; and everything that could make a page act: elements, attributes, the policy."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.waves: list[dict] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.policy: str | None = None
        self.style = ""
        self._open: list[str] = []  # the stack of open elements, each "tag.class"
        self._text: list[str] | None = None
        self._dt: str | None = None
        self.feed(html)
        self.close()

    def _inside(self, tag_class: str) -> bool:
        return tag_class in self._open

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]
        attributes = dict(attrs)
        kind = attributes.get("class") or ""
        if tag == "meta" and (attributes.get("http-equiv") or "").lower() == "content-security-policy":
            self.policy = attributes.get("content")
        if tag == "section" and kind == "wave":
            self.waves.append({"name": "", "phases": [], "gate": {}, "history": [], "tag_bar": [], "step": ""})
        elif tag == "li" and kind == "phase":
            self.waves[-1]["phases"].append({"name": "", "numbers": {}, "rects": []})
        elif tag == "rect" and self._inside("svg.bar") and kind != "track":
            rect = (kind, float(attributes["x"]), float(attributes["width"]))
            if self._inside("li.phase"):
                self.waves[-1]["phases"][-1]["rects"].append(rect)
            elif self._inside("ul.facts"):
                self.waves[-1]["tag_bar"].append(rect)
        if tag != "meta":  # the one void element of the page
            self._open.append(f"{tag}.{kind}")
        if tag in {"h2", "strong", "dt", "dd", "li", "h3", "style"}:
            self._text = []

    def handle_endtag(self, tag):
        assert self._open[-1].startswith(f"{tag}."), (tag, self._open)  # the page closes what it opens
        self._open.pop()
        if self._text is None:
            return
        value = "".join(self._text).strip()
        if tag == "style":
            self.style = "".join(self._text)
        elif tag == "h2" and self.waves:
            self.waves[-1]["name"] = value
        elif tag == "strong" and self._inside("li.phase") and not self.waves[-1]["phases"][-1]["name"]:
            self.waves[-1]["phases"][-1]["name"] = value
        elif tag == "h3" and value.startswith("Next: "):
            self.waves[-1]["step"] = value
        elif tag == "dt":
            self._dt = value
        elif tag == "dd" and self._inside("dl.numbers") and self._inside("li.phase"):
            self.waves[-1]["phases"][-1]["numbers"][self._dt] = value
        elif tag == "dd" and self._inside("dl.gate"):
            self.waves[-1]["gate"][self._dt] = value
        elif tag == "li" and self._inside("ol.history"):
            self.waves[-1]["history"].append(value)
        if tag in {"dd", "h2", "li", "h3", "style"}:
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def shown(value: object) -> str:
    return "–" if value is None else printable(str(value))


SPEC = wave(
    "v46",
    46,
    [
        phase("canary", group="canary"),
        phase("beta", group="beta", wait=24 * HOUR, updated=90),
        phase("us-east", group="us-east", limit=Limit(10), wait=24 * HOUR, updated=90),
    ],
    complete=CompleteSpec(gate=Gate(wait_seconds=48 * HOUR), location=Location("v46.yaml", 9, 1)),
)


def walkthrough_status() -> dict:
    """The walkthrough's v46 a day after beta rolled out, failures counted, next to a completed v44."""
    v44 = facts(
        "v44",
        44,
        status="complete",
        history=[entry("canary", NOW - timedelta(days=9), 10), entry(None, NOW - timedelta(days=8), 1990, wide=True)],
        finished=NOW - timedelta(days=7),
    )
    v46 = facts(
        "v46",
        46,
        history=[entry("canary", NOW - timedelta(days=2), 10), entry("beta", NOW - timedelta(days=1), 50)],
    )
    groups = {
        "canary": ScopeCounts(devices=10, updated=9, pending=1, offline=0),
        "beta": ScopeCounts(devices=50, updated=41, pending=9, offline=3),
        "us-east": ScopeCounts(devices=600, updated=0, pending=600, offline=31),
    }
    report = build_status(
        [SPEC, wave("v44", 44, [phase("canary", group="canary"), phase("all")])],
        factory="demo",
        backend="local:/tmp/factory",
        now=NOW,
        waves={"v44": v44, "v46": v46},
        counts={"v46": counts(50, 1950, 60, groups=groups), "v44": counts(2000)},
        wave_expiry={"v46": NOW + timedelta(days=300)},
        prod_expiry={"production": NOW + timedelta(days=20)},
        failed={"v46": {"canary": 1, "beta": 4, "us-east": 0}},
    )
    return json.loads(json.dumps(to_dict(report)))  # as `--format json` prints it


def test_every_number_on_the_page_is_the_status_jsons_and_the_bars_are_drawn_to_them():
    status = walkthrough_status()
    read = Page(page(status))
    assert [w["name"] for w in read.waves] == [f"{w['name']}{w['status']}" for w in status["waves"]]
    for on_page, wave_json in zip(read.waves, status["waves"], strict=True):
        assert [p["name"] for p in on_page["phases"]] == [p["name"] for p in wave_json["phases"]]
        for drawn, phase_json in zip(on_page["phases"], wave_json["phases"], strict=True):
            expected = {"reached": phase_json["reached"], "failed": phase_json["failed"]}
            if phase_json["counts"] is None:  # no bar; only the numbers there are
                assert drawn["numbers"] == {key: shown(value) for key, value in expected.items() if value is not None}
                assert drawn["rects"] == []
                continue
            expected |= {key: phase_json["counts"][key] for key in ("devices", "updated", "pending", "offline")}
            assert drawn["numbers"] == {key: shown(expected[key]) for key in NUMBERS}
            assert widths(drawn["rects"]) == expected_widths(phase_json["counts"], phase_json["failed"])
        if wave_json["devices"] is not None:
            assert widths(on_page["tag_bar"]) == expected_widths(wave_json["devices"], None)
        gate_json = wave_json["next_step"]
        if gate_json is None:
            assert on_page["gate"] == {} and on_page["step"] == ""
            continue
        assert on_page["step"] == f"Next: {gate_json['step']} {'ready' if gate_json['passed'] else 'waiting'}"
        expected_gate = {
            "wait": f"{format_duration(gate_json['wait_seconds'])} ({gate_json['wait_seconds']} s), "
            f"passes {gate_json['wait_passes_at']}",
            "updated required": f"{gate_json['updated_required']}%",
            "updated": shown(gate_json["updated"]),
            "reached": shown(gate_json["reached"]),
        }
        assert on_page["gate"] == expected_gate
    v46 = next(w for w in read.waves if w["name"].startswith("v46"))
    assert v46["history"] == [
        "2026-11-21T12:00:00Z: created by alice",
        "2026-11-21T12:00:00Z: rolled out canary by alice, 10 devices reached",
        "2026-11-22T12:00:00Z: rolled out beta by alice, 50 devices reached",
    ]
    # the state was what the walkthrough shows: numbers that differ between scopes, and failures counted
    beta = status["waves"][0]["phases"][1]
    assert beta["counts"] == {"devices": 50, "updated": 41, "pending": 9, "offline": 3} and beta["failed"] == 4


def widths(rects: list[tuple[str, float, float]]) -> dict[str, tuple[float, float]]:
    return {kind: (x, width) for kind, x, width in rects}


def expected_widths(counted: dict, failed: int | None) -> dict[str, tuple[float, float]]:
    """updated, then pending with its failed devices last; offline beneath: fractions of the scope's devices."""
    scale = BAR_WIDTH / counted["devices"]
    updated, pending, failures = counted["updated"], counted["pending"], failed or 0
    parts = {
        "updated": (0, updated),
        "pending": (updated, pending - failures),
        "failed": (updated + pending - failures, failures),
        "offline": (0, counted["offline"]),
    }
    return {kind: (round(x * scale, 2), round(n * scale, 2)) for kind, (x, n) in parts.items() if n}


HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=http://127.0.0.1:9/x onerror=alert(1)>',
    "]]><svg onload=alert(1)>",
    "'; background:url(http://127.0.0.1:9/)",
    "</style><style>*{background:url(//127.0.0.1:9)}",
    "x\u202eevil\x1b[31m",
    "&lt;amp&gt;",
]


def hostile_status() -> dict:
    status = walkthrough_status()
    v46 = status["waves"][0]
    for phase_json, name in zip(v46["phases"], HOSTILE[:3], strict=True):
        phase_json["name"] = name
    v46["name"], v46["tag"], v46["manifest"] = HOSTILE[0], HOSTILE[1], HOSTILE[2]
    v46["created_by"], v46["phases"][0]["rollout_by"], v46["phases"][0]["scope"] = HOSTILE[3], HOSTILE[4], HOSTILE[5]
    v46["next_step"]["step"] = HOSTILE[6]
    v46["next_step"]["blocked_by"] = HOSTILE[1]
    status["factory"] = status["backend"] = HOSTILE[4]
    steps = v46["forecast"]["steps"]  # the real forecast, its words replaced
    steps[0]["step"], steps[0]["unmet"], steps[1]["hold"] = HOSTILE[0], HOSTILE[1], HOSTILE[2]
    v46["forecast"]["zone"], v46["forecast"]["assumptions"] = HOSTILE[3], [HOSTILE[4]]
    return status


def test_hostile_names_stay_text_and_the_page_can_neither_run_nor_request_anything():
    html = page(hostile_status())
    read = Page(html)
    assert set(read.tags) <= {
        *("html", "head", "meta", "title", "style", "body", "header", "main", "section", "h1", "h2", "h3", "p"),
        *("div", "span", "strong", "code", "ul", "ol", "li", "dl", "dt", "dd", "svg", "rect"),
    }
    assert read.tags.count("style") == 1
    for tag, name, value in read.attributes:
        assert not name.startswith("on") and name not in {"style", "href", "src", "srcset", "action", "xlink:href"}
        assert tag == "meta" or ":" not in (value or "") or name == "aria-label", (tag, name, value)
    for _, name, value in read.attributes:
        if name == "class":
            assert set(value or "") <= set("abcdefghijklmnopqrstuvwxyz- 0123456789"), value
    # each hostile name is on the page as the text it is, with its controls as visible escapes
    (v46,) = [w for w in read.waves if w["name"].startswith(printable(HOSTILE[0]))]
    assert [p["name"] for p in v46["phases"]][:3] == [
        printable(HOSTILE[0]),
        printable(HOSTILE[1]),
        printable(HOSTILE[2]),
    ]
    assert "x\\u202eevil\\u001b[31m" in html and "\u202e" not in html and "\x1b" not in html
    assert v46["gate"]["blocked by"] == HOSTILE[1]
    (timeline,) = Timeline(html).forecasts
    assert [step["name"] for step in timeline["steps"]] == [printable(HOSTILE[0]), "complete"]
    assert timeline["steps"][0]["dl"]["waits on"] == HOSTILE[1] and timeline["steps"][1]["dl"]["held by"] == HOSTILE[2]
    assert timeline["assumptions"] == [HOSTILE[4]]
    assert "&amp;lt;amp&amp;gt;" in html


def test_expiry_is_flagged_as_the_text_report_flags_it():
    status = walkthrough_status()
    html = page(status)
    assert "production targets of <code>production</code> expire 2026-12-13T12:00:00Z <strong" in html
    assert '<strong class="waiting">(in 20d)</strong>' in html  # within the 30 days' warning
    assert "wave targets expire 2027-09-19T12:00:00Z</li>" in html  # 300 days away: no flag
    status["waves"][0]["targets_expire"] = "2026-11-23T11:00:00Z"
    assert 'wave targets expire 2026-11-23T11:00:00Z <strong class="blocked">(EXPIRED)</strong>' in page(status)


def test_the_policy_allows_nothing_but_the_pages_own_style_sheet():
    read = Page(page(walkthrough_status()))
    digest = base64.b64encode(hashlib.sha256(read.style.encode()).digest()).decode()
    assert read.policy == f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    assert "url(" not in read.style and "@import" not in read.style


class Timeline(HTMLParser):
    """The forecast sections as a reader meets them: per wave its done line, expiry warning, axis, and per
    step its name, its words (``dt``/``dd``) and its track's rectangles, each with its title."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forecasts: list[dict] = []
        self._open: list[str] = []
        self._text: list[str] | None = None
        self._dt = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        kind = attributes.get("class") or ""
        if tag == "meta":
            return
        self._open.append(f"{tag}.{kind}")
        if tag == "h3":
            self._text = []
        elif tag == "li" and kind == "step":
            self.forecasts[-1]["steps"].append({"name": "", "dl": {}, "rects": []})
        elif tag == "rect" and "svg.track" in self._open and kind not in {"track", "now"}:
            x, width = float(attributes["x"]), float(attributes["width"])
            self.forecasts[-1]["steps"][-1]["rects"].append({"kind": kind, "x": x, "end": x + width, "title": ""})
        if self.forecasts and tag in {"strong", "dt", "dd", "title", "span", "li", "p"}:
            self._text = []

    def handle_endtag(self, tag):
        opened = self._open.pop()
        if self._text is None:
            return
        value, here = "".join(self._text).strip(), self.forecasts[-1] if self.forecasts else None
        if tag == "h3" and value == FORECAST_TITLE:
            self.forecasts.append({"done": "", "done_at": "", "expiry": "", "axis": [], "steps": [], "assumptions": []})
        elif here is None:
            pass
        elif tag == "strong" and "p.done" in self._open:
            here["done"] = value
        elif tag == "span" and "p.done" in self._open:
            here["done_at"] = value
        elif tag == "p" and opened == "p.expiry":
            here["expiry"] = value
        elif tag == "span" and "div.axis" in self._open:
            here["axis"].append(value)
        elif tag == "strong" and "li.step" in self._open and not here["steps"][-1]["name"]:
            here["steps"][-1]["name"] = value
        elif tag == "dt" and "li.step" in self._open:
            self._dt = value
        elif tag == "dd" and "li.step" in self._open:
            here["steps"][-1]["dl"][self._dt] = value
        elif tag == "title" and "svg.track" in self._open:
            here["steps"][-1]["rects"][-1]["title"] = value
        elif tag == "li" and "ul.assumptions" in self._open:
            here["assumptions"].append(value)
        self._text = None if tag in {"li", "p", "h3"} else self._text

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


BERLIN = ZoneInfo("Europe/Berlin")
# NOW is Mon 2026-11-23 13:00 CET. Rollouts only Mon-Wed 09:00-16:00 Berlin; a freeze until Tue 10:00 CET.
WINDOW = Window(frozenset({0, 1, 2}), 9 * 60, 16 * 60, BERLIN, "v46.yaml:12:5")
FREEZE = Freeze(NOW - timedelta(hours=1), NOW + timedelta(hours=21), "release <party> & co", BERLIN, "v46.yaml:15:5")


def scheduled_status() -> tuple[dict, str]:
    """v46 half a day after beta (us-east's wait not over, so its gate is not read yet), under a window and
    a freeze, targets expiring in five days: the status JSON and the text status, from the real status code.
    us-east's wait ends Tue 01:00 CET, inside the freeze, which ends inside the window: held by the freeze
    until Tue 10:00 CET; the complete's 48h end Thu 10:00 CET, not a window day: held by the window until
    Mon 2026-11-30 09:00 CET, after the targets expire."""
    v46 = facts(
        "v46",
        46,
        history=[entry("canary", NOW - timedelta(days=2), 10), entry("beta", NOW - timedelta(hours=12), 50)],
    )
    groups = {
        "canary": ScopeCounts(devices=10, updated=9, pending=1, offline=0),
        "beta": ScopeCounts(devices=50, updated=20, pending=30, offline=3),
        "us-east": ScopeCounts(devices=600, updated=0, pending=600, offline=31),
    }
    report = build_status(
        [replace(SPEC, schedule=Schedule((WINDOW,), (FREEZE,)))],
        factory="demo",
        backend="local:/tmp/factory",
        now=NOW,
        waves={"v46": v46},
        counts={"v46": counts(29, 1971, 60, groups=groups)},
        wave_expiry={"v46": NOW + timedelta(days=5)},
        prod_expiry={},
        failed={},
    )
    return json.loads(json.dumps(to_dict(report))), to_text(report)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def test_the_forecast_is_drawn_from_the_status_jsons_times_with_its_windows_and_freezes():
    status, as_text = scheduled_status()
    (wave_json,) = status["waves"]
    forecast = wave_json["forecast"]
    # the state is the one described: a freeze holds one step, a window the other, too late for the expiry
    assert [(s["step"], s["bound"], s["at"]) for s in forecast["steps"]] == [
        ("rollout us-east", "freeze", "2026-11-24T09:00:00Z"),
        ("complete", "window", "2026-11-30T08:00:00Z"),
    ]
    assert forecast["within_expiry"] is False
    (drawn,) = Timeline(page(status)).forecasts
    # the done line is the text report's own, in the calendar's zone, and the JSON's done_at beside it
    assert f"  forecast: {drawn['done']}\n" in as_text + "\n"
    assert drawn["done"] == "done no earlier than Mon 2026-11-30 09:00 CET, after its targets expire"
    assert drawn["done_at"] == f"({forecast['done_at']})"
    assert drawn["expiry"] == f"Warning: the wave's targets expire {forecast['expires']}, before the forecast ends."
    assert drawn["assumptions"] == forecast["assumptions"]
    first, last = (_instant(t) for t in drawn["axis"])

    def x(moment: datetime) -> float:
        return (moment - first).total_seconds() / (last - first).total_seconds() * BAR_WIDTH

    assert [s["name"] for s in drawn["steps"]] == [s["step"] for s in forecast["steps"]]
    for step, step_json in zip(drawn["steps"], forecast["steps"], strict=True):
        start, at = _instant(step_json["start"]), _instant(step_json["at"])
        waited = start + timedelta(seconds=step_json["wait"])
        assert step["dl"] == {
            "wait starts": step_json["start"],
            "wait": format_duration(step_json["wait"]),
            "held by": step_json["hold"],
            "earliest": step_json["at"],
        }
        wait, hold, mark = step["rects"]
        assert (wait["kind"], wait["title"]) == ("wait", f"wait {format_duration(step_json['wait'])}")
        assert wait["x"] == pytest.approx(x(start), abs=0.1) and wait["end"] == pytest.approx(x(waited), abs=0.2)
        # the hold in its own colour, named with its words, from the end of the wait (or now) to the mark
        assert (hold["kind"], hold["title"]) == (step_json["bound"], step_json["hold"])
        assert hold["x"] == pytest.approx(x(max(waited, _instant(status["now"]))), abs=0.1)
        assert hold["end"] == pytest.approx(x(at), abs=0.2)
        assert (mark["kind"], mark["title"]) == ("earliest", f"earliest: {step_json['at']}")
        assert (mark["x"] + mark["end"]) / 2 == pytest.approx(x(at), abs=0.1)
    assert "frozen until Tue 2026-11-24 10:00 CET: release <party> & co" in drawn["steps"][0]["dl"]["held by"]
    assert "outside the rollout windows" in drawn["steps"][1]["dl"]["held by"]


def test_a_step_not_forecast_shows_what_it_waits_on_instead_of_a_mark():
    status = walkthrough_status()
    forecast = status["waves"][0]["forecast"]
    assert [s["at"] for s in forecast["steps"]] == [None, None] and forecast["within_expiry"] is None
    assert status["waves"][1]["forecast"] is None  # v44 is complete: no forecast, no section
    (drawn,) = Timeline(page(status)).forecasts
    assert drawn["expiry"] == "" and drawn["done_at"] == ""
    assert drawn["done"] == "done: not forecast (rollout us-east: waits on updated 90%: 83.3% (50 of 60 devices))"
    for step, step_json in zip(drawn["steps"], forecast["steps"], strict=True):
        assert step["dl"]["waits on"] == step_json["unmet"] and "earliest" not in step["dl"]
        assert step["dl"]["wait starts"] == (step_json["start"] or "–")
        assert [r["kind"] for r in step["rects"]] == (["wait"] if step_json["start"] else [])


def test_the_page_reads_the_forecast_json_back_as_the_core_wrote_it():
    for status in (walkthrough_status(), scheduled_status()[0]):
        for wave_json in status["waves"]:
            rebuilt = forecast_of(wave_json)
            if wave_json["forecast"] is None:
                assert rebuilt is None
            else:
                assert rebuilt is not None and forecast_dict(rebuilt) == wave_json["forecast"]


@pytest.fixture(scope="module")
def factory_and_repo(tmp_path_factory):
    """A demo factory whose canary wave rolled out, and its release repository."""
    base = tmp_path_factory.mktemp("report")
    local = init_demo_factory(base / "factory", 100)
    repo = base / "releases"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ops@example.com")
    git(repo, "config", "user.name", "ops")
    commit(repo, {"rel-46.yaml": CANARY_WAVE}, "waves")
    code, _, err = reconcile(str(repo), "--local", str(local))
    assert code == 0, err
    return repo, local


def test_status_format_html_writes_the_page_of_the_json_to_output(factory_and_repo, tmp_path):
    repo, local = factory_and_repo
    target = tmp_path / "report.html"
    target.write_text("an older report")
    code, out, err = reconcile("status", str(repo), "--local", str(local), "--format", "html", "-o", str(target))
    assert (code, out) == (0, ""), err
    code, as_json, err = reconcile("status", str(repo), "--local", str(local), "--format", "json")
    assert code == 0, err
    assert target.read_text() == page(json.loads(as_json)) + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left
    code, out, _ = reconcile("status", str(repo), "--local", str(local), "--format", "html")
    assert code == 0 and out == target.read_text()  # stdout without -o


def test_status_output_refuses_what_is_not_a_regular_file(factory_and_repo, tmp_path):
    repo, local = factory_and_repo
    (tmp_path / "elsewhere").write_text("kept")
    (tmp_path / "link.html").symlink_to(tmp_path / "elsewhere")
    code, _, err = reconcile(
        "status", str(repo), "--local", str(local), "--format", "html", "-o", str(tmp_path / "link.html")
    )
    assert code == 1 and err == (
        f"error: cannot write the status to {tmp_path / 'link.html'}: it is a symbolic link; give a regular "
        "file, or - for stdout\n"
    )
    assert (tmp_path / "elsewhere").read_text() == "kept"
    code, _, err = reconcile("status", "--devices", "rel-46", "--local", str(local), "--format", "html")
    assert code == 1 and "--format html shows the waves" in err
