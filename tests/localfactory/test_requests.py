"""Local factory: requests are checked like a real server's (issue 11, items 1, 3 and 5).

Media type (415), body size (413, decided before the body is read whole), strict JSON (400 for
deep nesting, lone surrogates, NaN, duplicate keys; never 500), ``WaveCreate.version`` a string,
every CI target of the version in the wave, ``signed`` canonical as received, and no rollout or
complete of an expired wave.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import timedelta

import httpx
import pytest

from reconciler import signing
from reconciler.localfactory import requestbody, targets
from tests.helpers.factory import F, new_factory


@pytest.fixture
def factory(tmp_path_factory, tmp_path):
    yield from new_factory(tmp_path_factory, tmp_path)


def post_raw(factory, path: str, content: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return factory.http.post(path, content=content, headers=headers)


def wire(body: dict, signed_text: bytes) -> bytes:
    """A WaveCreate with ``targets.signed`` spliced in as ``signed_text``."""
    head = json.dumps({"name": body["name"], "version": body["version"], "tag": body["tag"]}).encode()[:-1]
    return (
        head
        + b', "targets": {"signatures": '
        + json.dumps(body["targets"]["signatures"]).encode()
        + b', "signed": '
        + signed_text
        + b"}}"
    )


# ------------------------------------------------------------------------------------ item 1: canonical signed


def test_signed_not_canonical_as_received_is_refused(factory):
    body = factory.wave_body("v42", 42)
    signed = body["targets"]["signed"]
    reordered = json.dumps(dict(reversed(list(signed.items()))), separators=(",", ":"), ensure_ascii=False)
    spaced = json.dumps(signed, ensure_ascii=False)  # sorted keys, but ", " and ": "
    for text in (reordered.encode(), spaced.encode()):
        r = post_raw(factory, f"{F}/waves/", wire(body, text))
        assert r.status_code == 400, r.text
        assert r.json()["message"] == "Targets validation failed"
        assert "not canonical JSON as received" in r.json()["errors"][0]
    assert factory.http.get(f"{F}/waves/v42/").status_code == 404


def test_canonical_signed_inside_a_loosely_formatted_envelope_is_accepted_and_served_canonical(factory):
    body = factory.wave_body("v42", 42)
    canonical = signing.canonical_json(body["targets"]["signed"])
    # Whitespace and member order around ``signed`` are free; a decoy "signed" member comes first.
    text = (
        b'{\n  "targets" : {"decoy": {"signed": {"b": 1, "a": 2}},\n   "signatures" : '
        + json.dumps(body["targets"]["signatures"]).encode()
        + b' ,\n   "signed" :  '
        + canonical
        + b' } ,\n  "name": "v42", "tag": "production", "version": "42"\n}\n'
    )
    r = post_raw(factory, f"{F}/waves/", text)
    assert r.status_code == 201, r.text
    served = factory.http.get(f"{F}/waves/v42/", params={"show-targets": 1})
    assert b'"signed":' + canonical in served.content
    targets_served = factory.http.get(f"{F}/wave-targets/", params={"name": "v42"})
    assert b'"signed":' + canonical in targets_served.content


# ------------------------------------------------------------------------------------ item 5: requests


def test_json_bodies_need_the_json_media_type(factory):
    wave = factory.wave_body("v42", 42)
    body = wire(wave, signing.canonical_json(wave["targets"]["signed"]))
    for content_type in ("text/plain", None, "application/json-patch+json", "application/json; charset=latin-1"):
        r = post_raw(factory, f"{F}/waves/", body, content_type)
        assert r.status_code == 415, (content_type, r.text)
        assert "application/json" in r.json()["message"] and r.json()["errors"] == []
    r = post_raw(factory, f"{F}/device-groups/", b'{"name": "lab"}', "text/plain")
    assert r.status_code == 415
    assert post_raw(factory, f"{F}/waves/", body, "Application/JSON; charset=UTF-8").status_code == 201
    # fioctl sends complete and cancel without a body and without a Content-Type.
    assert factory.http.post(f"{F}/waves/v42/cancel/").status_code == 200


def test_a_body_over_the_limit_is_413_from_its_content_length(factory):
    limit = requestbody.MAX_BODY_BYTES
    r = post_raw(factory, f"{F}/waves/", b" " * (limit + 1))
    assert r.status_code == 413 and "16 MiB" in r.json()["message"]
    assert post_raw(factory, f"{F}/waves/", b" " * limit + b"{}").status_code == 413


class CountingInput:
    """A ``wsgi.input`` of endless spaces that counts what the app reads from it."""

    def __init__(self):
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "the app must never read an unbounded body"
        self.read_bytes += size
        return b" " * size


def call_app(factory, environ_extra: dict) -> tuple[str, dict]:
    stream = CountingInput()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"{F}/waves/",
        "QUERY_STRING": "",
        "SERVER_NAME": "lf",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_TYPE": "application/json",
        **environ_extra,
    }
    seen = {}
    body = b"".join(factory.embedded.app(environ, lambda status, headers, exc=None: seen.update(status=status)))
    return seen["status"], {"body": json.loads(body), "read": stream.read_bytes}


def test_oversized_bodies_are_refused_before_they_are_read_whole(factory):
    status, out = call_app(factory, {"CONTENT_LENGTH": str(64 * 1024 * 1024)})
    assert status.startswith("413") and out["read"] == 0
    status, out = call_app(factory, {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True})
    assert status.startswith("413") and out["read"] == requestbody.MAX_BODY_BYTES + 1


def test_a_chunked_body_within_the_limit_is_read(factory):
    body = json.dumps({"name": "lab"}).encode()
    r = factory.http.post(
        f"{F}/device-groups/", content=iter([body[:5], body[5:]]), headers={"Content-Type": "application/json"}
    )
    assert r.request.headers.get("transfer-encoding") == "chunked" and r.status_code == 201, r.text


@pytest.mark.parametrize(
    "text,why",
    [
        (b"[" * 100_000 + b"]" * 100_000, "more than 64 deep"),
        (b'{"name": "lab", "description": ' + b"[" * 65 + b"]" * 65 + b"}", "more than 64 deep"),
        (b'{"name": "lab", "description": "\\ud800"}', "lone surrogate"),
        (b'{"name": "lab", "description": "\\udc00\\ud800"}', "lone surrogate"),
        (b'{"name": "lab", "description": NaN}', "not valid JSON"),
        (b'{"name": "lab", "name": "lab2"}', "not valid JSON"),
        (b'{"name": "caf\xe9"}', "not valid UTF-8"),
    ],
)
def test_malformed_json_is_400_never_500(factory, text, why):
    for path in (f"{F}/device-groups/", f"{F}/waves/", f"{F}/waves/populate-targets/rollout/"):
        r = post_raw(factory, path, text)
        assert r.status_code == 400, (path, r.text)
        assert why in r.json()["message"] + " ".join(r.json()["errors"])


def test_a_surrogate_pair_is_valid_json(factory):
    r = post_raw(factory, f"{F}/device-groups/", b'{"name": "lab", "description": "\\ud83d\\ude80"}')
    assert r.status_code == 201 and r.json()["description"] == "\U0001f680"


@pytest.mark.parametrize("version", [42, 42.0, " 42", "042", "+42", True, None])
def test_wave_version_must_be_a_json_string_of_the_number(factory, version):
    body = factory.wave_body("v42", 42)
    body["version"] = version
    r = factory.post_wave(body)
    assert r.status_code == 400, r.text
    assert any(e.startswith("version: ") and "JSON string" in e for e in r.json()["errors"])


def test_a_wave_missing_ci_targets_of_its_version_is_refused(factory):
    body = factory.wave_body("v42", 42, sign=False)
    signed = body["targets"]["signed"]
    del signed["targets"]["raspberrypi4-64-lmp-42"]
    body["targets"]["signatures"] = [factory.offline_signer().sign(signed)]
    r = factory.post_wave(body)
    assert r.status_code == 400
    assert r.json() == {
        "message": "Targets validation failed",
        "errors": ["CI Target differs for target raspberrypi4-64-lmp-42: not present in a wave"],
    }


def test_ci_targets_a_source_tag_filters_out_may_be_missing(factory):
    with factory.embedded.store.write() as conn:
        targets.add_ci_build(conn, 61, ["intel-corei7-64"], ["main"])
        targets.add_ci_build(conn, 61, ["raspberrypi4-64"], ["main", "devel"])
    devel_only = factory.wave_body("devel-61", 61, source_tag="devel")
    assert list(devel_only["targets"]["signed"]["targets"])[-1:] == ["raspberrypi4-64-lmp-61"]
    assert "intel-corei7-64-lmp-61" not in devel_only["targets"]["signed"]["targets"]
    assert factory.post_wave(devel_only).status_code == 201
    factory.ok(factory.http.post(f"{F}/waves/devel-61/cancel/"))
    # Leaving out the devel target cannot come from a source tag: every "main" target must be there.
    body = factory.wave_body("main-61", 61, sign=False)
    signed = body["targets"]["signed"]
    del signed["targets"]["raspberrypi4-64-lmp-61"]
    body["targets"]["signatures"] = [factory.offline_signer().sign(signed)]
    r = factory.post_wave(body)
    assert r.status_code == 400
    assert r.json()["errors"] == ["CI Target differs for target raspberrypi4-64-lmp-61: not present in a wave"]


# ------------------------------------------------------------------------------------ item 3: expiry


def test_an_expired_wave_is_never_rolled_out_nor_completed(factory):
    factory.create_wave("v42", 42, expires=factory.now() + timedelta(seconds=30))
    factory.rollout("v42", group="canary")  # still valid
    before = factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"}))
    factory.advance(120)
    for options in ({"group": "beta"}, {"group": "beta", "dry_run": True}):
        r = factory.rollout("v42", expect=409, **options)
        assert r["message"].startswith("Cannot roll out wave v42: its targets expired at ")
        assert r["errors"] and "has passed" in r["errors"][0]
    r = factory.http.post(f"{F}/waves/v42/complete/")
    assert r.status_code == 409 and r.json()["message"].startswith("Cannot complete wave v42: its targets expired")
    assert factory.ok(factory.http.get(f"{F}/prod-targets/", params={"tag": "production"})) == before
    assert len(factory.wave("v42")["rollout-history"]) == 1
    assert factory.ok(factory.http.post(f"{F}/waves/v42/cancel/"))["status"] == "canceled"  # the way out


def test_canonical_json_helper_matches_what_the_test_client_sends(factory):
    """Guards the helpers above: ``post_wave`` sends the canonical bytes of ``signed``."""
    body = factory.wave_body("v42", 42)
    sent = factory.post_wave(body).request.content
    assert b'"signed":' + signing.canonical_json(body["targets"]["signed"]) in sent
    assert io.BytesIO(sent).read(1) == b"{"
