"""`/app/` serves the crew app's committed build: public, CSP-strict, cacheable assets, nothing outside its folder."""

from __future__ import annotations

import re

import aiohttp
from yarl import URL

from tests.conftest import Server


async def test_app_shell_assets_and_service_worker_are_served_with_a_strict_csp(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(server.url + "/app", allow_redirects=False) as r:
            assert r.status == 308 and r.headers["Location"] == "/app/"
        async with s.get(server.url + "/app/") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert r.headers["Cache-Control"] == "no-cache"
            html = await r.text()
        assert "<script>" not in html  # only external module scripts: nothing the CSP would block
        assets = re.findall(r'(?:src|href)="(/app/assets/[^"]+)"', html)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for path in assets:
            async with s.get(server.url + path, headers={"Accept-Encoding": "gzip"}) as r:
                assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
                assert r.headers["Content-Encoding"] == "gzip"  # the build's pre-compressed sibling
                assert r.headers["Content-Type"].startswith("text/javascript" if path.endswith(".js") else "text/css")
                assert len(await r.read()) > 1000
        async with s.get(server.url + "/app/sw.js") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
            sw = await r.text()
        for path in assets:  # the service worker precaches exactly what the shell loads, so the app starts offline
            assert f'"{path}"' in sw
        async with s.get(server.url + "/app/manifest.webmanifest") as r:
            assert r.status == 200


async def test_app_route_never_serves_files_outside_its_folder(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        for path in ("/app/../pyproject.toml", "/app/%2e%2e/app.py", "/app/..%2fcrewapp.py", "/app/nope.js", "/app/assets/"):
            async with s.get(URL(server.url + path, encoded=True)) as r:  # sent as is, not normalised by the client
                assert r.status == 404, path
                body = await r.json()
                assert body["error"]["code"] == "not_found"
