"""What ``reconcile`` puts on the wire when it creates a wave (issue 11, item 1).

The reconciler runs against the local factory served over real HTTP through a recording WSGI
layer, so the test sees the exact bytes of the ``POST waves/`` a real init sends: ``signed`` must
be the canonical JSON fioctl writes, byte for byte, and the signature must cover those bytes.
"""

from __future__ import annotations

import io
import json
import threading

import pytest
import waitress

from reconciler import signing
from reconciler.localfactory import open_embedded
from tests.helpers.e2e import CANARY_WAVE, commit, reconcile


@pytest.fixture
def recorded(factory_dir):
    """The factory served on a free port; every request's method, path, content type and body."""
    embedded = open_embedded(factory_dir)
    seen: list[tuple[str, str, str | None, bytes]] = []

    def recording(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("CONTENT_TYPE"), body))
        environ["wsgi.input"] = io.BytesIO(body)
        return embedded.app(environ, start_response)

    server = waitress.create_server(recording, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}", seen, embedded
    finally:
        server.close()
        thread.join(timeout=10)
        embedded.store.close()


def test_init_sends_signed_as_the_canonical_bytes_it_signed(release_repo, recorded):
    url, seen, embedded = recorded
    commit(release_repo, {"rel-46.yaml": CANARY_WAVE}, "Release 46")
    code, _, err = reconcile(
        str(release_repo), "--api-url", url, "--factory", "demo", "--keys", str(embedded.keys_archive)
    )
    assert code == 0, err
    creates = [
        (ctype, body)
        for method, path, ctype, body in seen
        if method == "POST" and path.rstrip("/") == "/ota/factories/demo/waves"
    ]
    assert len(creates) == 1
    content_type, body = creates[0]
    assert content_type == "application/json"
    wave = json.loads(body)
    signed = wave["targets"]["signed"]
    canonical = signing.canonical_json(signed)
    assert b'"signed":' + canonical + b',"signatures":' in body, "signed is sent as its canonical bytes"
    assert wave["version"] == "46" and isinstance(wave["version"], str)
    assert list(wave) == ["name", "version", "tag", "targets"] and list(wave["targets"]) == ["signed", "signatures"]
    root = json.loads(open_root(embedded))
    (signature,) = wave["targets"]["signatures"]
    assert signing.verify_signature(root, "targets", signed, signature) == signature["keyid"]


def open_root(embedded) -> str:
    with embedded.store.read() as conn:
        return conn.execute("SELECT body FROM roots WHERE kind = 'prod' ORDER BY version DESC").fetchone()[0]
