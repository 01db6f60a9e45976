"""The API's documentation page works without internet: every asset is the package's own."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

import plinth.server
from plinth.config import load_settings
from plinth.server.app import create_app

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)
STATIC = Path(plinth.server.__file__).parent / "static" / "swagger-ui"


@pytest.mark.parametrize("auth", [False, True])
def test_the_docs_page_loads_only_the_servers_own_assets(tmp_path: Path, auth: bool) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(load_settings(home=tmp_path, auth=auth))) as http:
        page = http.get("/docs")  # open on a server that needs tokens: it holds no data
        assert page.status_code == 200
        assert re.findall(r"https?://", page.text) == []  # no CDN, no validator
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(assets) == [
            "/static/swagger-ui/favicon-32x32.png",
            "/static/swagger-ui/swagger-ui-bundle.js",
            "/static/swagger-ui/swagger-ui.css",
        ]
        for asset in assets:
            served = http.get(asset)
            assert served.status_code == 200, asset
            assert served.content == (STATIC / asset.rsplit("/", 1)[1]).read_bytes()
        assert "'/api/v1/openapi.json'" in page.text
        assert http.get("/api/v1/openapi.json").status_code == 200
        assert http.get("/docs/oauth2-redirect").status_code == 200
        # nothing beside the assets is served from the package (the client folds ".." away)
        assert http.get("/static/app.py").status_code == 404
        assert http.get("/static/%2e%2e/app.py").status_code == 404


def test_the_vendored_files_match_their_recorded_checksums() -> None:
    recorded = dict(
        reversed(line.split())
        for line in (STATIC / "VERSION.txt").read_text().splitlines()
        if re.fullmatch(r"[0-9a-f]{64}  \S+", line)
    )
    assert set(recorded) == {p.name for p in STATIC.iterdir()} - {"VERSION.txt"}
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
