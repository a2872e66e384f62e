"""Typed AppKeys and request keys: process-wide resources live on the app, never in module globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from sync_server.settings import Settings

if TYPE_CHECKING:
    from protocol.cursor import CursorSigner
    from sync_server.auth import AuthCache, Principal, TouchMemo
    from sync_server.engine.pull_batch import FirstPages
    from sync_server.engine.push_batch import PushBatcher
    from sync_server.engine.wakeups import LiveWakeups
    from sync_server.storage.org import CodeCache

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
DSN = web.AppKey("dsn", str)  # the live feed's LISTEN connection cannot come from the pool
CURSORS: web.AppKey["CursorSigner"] = web.AppKey("cursors")
AUTH_CACHE: web.AppKey["AuthCache"] = web.AppKey("auth_cache")  # device principals of /v1/sync/, dropped on NOTIFY (1 s old at most without it)
CODES: web.AppKey["CodeCache"] = web.AppKey("codes")  # service types' allowed codes, for the push's checks
TOUCHED: web.AppKey["TouchMemo"] = web.AppKey("touched")  # device contacts this process queued or wrote
FIRST_PAGES: web.AppKey["FirstPages"] = web.AppKey("first_pages")  # concurrent delta pulls' shared statements
PUSHES: web.AppKey["PushBatcher | None"] = web.AppKey("pushes")  # concurrent pushes' shared transactions (None: off)
PRINCIPAL: web.RequestKey["Principal"] = web.RequestKey("fieldsync.principal")  # set by the auth middleware
WAKEUPS: web.AppKey["LiveWakeups"] = web.AppKey("live_wakeups")  # pushes' live-feed NOTIFYs, coalesced on their own connection
