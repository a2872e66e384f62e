"""Open311 GeoReport v2: the city's 311 channels post requests into FieldSync and read crews' results back."""

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the public GeoReport v2 routes and the admin API for keys, rules and service definitions."""
    from sync_server.open311 import admin, handlers

    admin.setup(app)
    handlers.setup(app)
