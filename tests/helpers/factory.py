"""Helpers for the local factory tests: a small demo factory per test (copied from one made per
session), an httpx client on its in-process WSGI app, and a wave body built and signed the way
``fioctl waves init`` does it, through the API."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from reconciler import signing
from reconciler.localfactory import demo, open_embedded, store

T0 = int(datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC).timestamp())  # a Monday, noon UTC
SEED = 7
DEVICES = 400
F = "/ota/factories/demo"

_templates: dict[tuple, Path] = {}


def make_template(tmp_path_factory, devices: int = DEVICES, seed: int = SEED) -> Path:
    key = (devices, seed)
    if key not in _templates:
        path = tmp_path_factory.mktemp("factory-template") / "f"
        demo.init_factory(path, devices_n=devices, seed=seed, start=T0)
        _templates[key] = path
    return _templates[key]


class Factory:
    """One test's factory: the embedded app, an API client and helpers that speak HTTP."""

    def __init__(self, path: Path, http: httpx.Client | None = None):
        self.embedded = open_embedded(path)
        self.path = path
        self.http = http or httpx.Client(transport=httpx.WSGITransport(app=self.embedded.app), base_url="http://lf")
        self.archive = signing.load_key_archive_file(self.embedded.keys_archive)

    def close(self) -> None:
        self.http.close()
        self.embedded.store.close()

    def ok(self, response: httpx.Response, status: int = 200):
        assert response.status_code == status, response.text
        return response.json()

    def wave_body(
        self,
        name: str,
        version: int,
        tag: str = "production",
        *,
        prune=(),
        source_tag=None,
        expires: datetime | None = None,
        sign: bool = True,
    ) -> dict:
        ci = self.ok(self.http.get(f"{F}/targets/", params={"version": version}))
        r = self.http.get(f"{F}/prod-targets/", params={"tag": tag})
        prod = r.json()[tag] if r.status_code == 200 else None
        assert r.status_code in (200, 404), r.text
        now = self.now()
        signed = signing.build_wave_targets(
            ci_targets=ci,
            prod_targets=prod,
            version=version,
            tag=tag,
            source_tag=source_tag,
            prune=prune,
            expires=expires or now + timedelta(days=365),
        )
        sigs = [self.offline_signer().sign(signed)] if sign else []
        return {"name": name, "version": str(version), "tag": tag, "targets": {"signed": signed, "signatures": sigs}}

    def post_wave(self, body: dict) -> httpx.Response:
        """POST a WaveCreate the way fioctl sends it: ``targets.signed`` as its canonical bytes."""
        signed = body["targets"]["signed"]
        canonical = {**body, "targets": {**body["targets"], "signed": json.loads(signing.canonical_json(signed))}}
        return self.http.post(f"{F}/waves/", json=canonical)

    def offline_signer(self) -> signing.TargetsSigner:
        root = self.ok(self.http.get("/ota/repo/demo/api/v1/user_repo/root.json"))  # fioctl signs with the CI root
        online = self.ok(self.http.get(f"{F}/ci-targets.pub"))
        return signing.find_offline_signer(root, self.archive, online)

    def create_wave(self, name: str, version: int, tag: str = "production", **kw) -> dict:
        return self.ok(self.post_wave(self.wave_body(name, version, tag, **kw)), 201)

    def rollout(self, wave: str, expect: int = 200, **options) -> dict:
        body = {"dry-run": False, "return-uuids": False, "return-names": False}
        body.update({k.replace("_", "-"): v for k, v in options.items()})
        r = self.http.post(f"{F}/waves/{wave}/rollout/", json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def status(self, wave: str, **params) -> dict:
        return self.ok(self.http.get(f"{F}/waves/{wave}/status/", params=params))

    def wave(self, name: str, show_targets: bool = False) -> dict:
        return self.ok(self.http.get(f"{F}/waves/{name}/", params={"show-targets": 1} if show_targets else None))

    def now(self) -> datetime:
        with self.embedded.store.read() as conn:
            return store.to_datetime(store.now(conn))

    def advance(self, seconds: int) -> dict:
        from reconciler.localfactory import fleet

        with self.embedded.store.write() as conn:
            return fleet.advance(conn, seconds)

    def sql(self, query: str, args=()) -> list:
        with self.embedded.store.read() as conn:
            return conn.execute(query, args).fetchall()

    def devices(self, **params) -> list[dict]:
        params.setdefault("limit", 1000)
        out, page = [], 1
        while True:
            data = self.ok(self.http.get("/ota/devices/", params={"factory": "demo", "page": page, **params}))
            out += data["devices"]
            if not data["next"]:
                return out
            page += 1


def new_factory(tmp_path_factory, tmp_path):
    """Generator for a test module's ``factory`` fixture: a copy of the session's template factory."""
    template = make_template(tmp_path_factory)
    path = tmp_path / "factory"
    shutil.copytree(template, path)
    f = Factory(path)
    yield f
    f.close()


def split_uuids(text: str) -> list[str]:
    """fioctl's UUID list parsing: separators , ; | and any white space."""
    return [u for u in re.split(r"[,;|\s]+", text) if u]
