"""Supervisor and admin JSON API (filled in by the supervisor-API work)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register supervisor routes."""
