"""`/app/`: the crew web app's built files (clients/js/app, built by ops/build-web.sh into sync_server/web/app).

Static and public: the app itself holds no data; every request it makes to the API carries the device token. Served
with a strict Content-Security-Policy (no inline script or style), so an injected ticket description cannot run.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

APP_DIR = Path(__file__).resolve().parent / "app"
PREFIX = "/app/"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".webmanifest": "application/manifest+json", ".json": "application/json", ".png": "image/png"}


def _headers(path: Path) -> dict[str, str]:
    """Hashed assets are immutable; the shell and the service worker must revalidate so updates reach phones."""
    immutable = path.parent.name == "assets"
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache",
        "Content-Type": TYPES.get(path.suffix, "application/octet-stream"),
    }


async def app_redirect(request: web.Request) -> web.StreamResponse:
    """/app → /app/ so relative asset paths and the service worker scope line up."""
    raise web.HTTPPermanentRedirect(PREFIX)


async def app_file(request: web.Request) -> web.StreamResponse:
    """One built file; the shell for `/app/`. Paths are resolved inside APP_DIR only (no traversal)."""
    rel = request.match_info.get("path", "") or "index.html"
    root = APP_DIR.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise web.HTTPNotFound()
    resp = web.FileResponse(target, headers=_headers(target))
    return resp


def setup(app: web.Application) -> None:
    """Register the crew app routes (public: see sync_server/api/middleware.PUBLIC_PREFIXES)."""
    app.router.add_get("/app", app_redirect)
    app.router.add_get(PREFIX + "{path:.*}", app_file)
