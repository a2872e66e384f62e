"""Every line logged while a request runs carries its request id and, once authenticated, its caller; and nothing of
one request leaks into the next."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
import structlog

from sync_server.logging import REQUEST_FIELDS, add_request_fields, configure_logging
from sync_server.settings import LogFormat
from tests.conftest import Server
from tests.factories import World


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON log lines of this test, with the process's logging put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buf = io.StringIO()
    configure_logging(LogFormat.JSON, "info")
    root.handlers[0].setStream(buf)  # type: ignore[attr-defined]
    try:
        yield buf
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def test_the_processor_adds_the_current_requests_fields_without_overriding_a_lines_own() -> None:
    assert add_request_fields(None, "info", {"event": "x"}) == {"event": "x"}  # outside any request
    token = REQUEST_FIELDS.set({"request_id": "r1", "principal": "dev-1"})
    try:
        assert add_request_fields(None, "info", {"event": "x", "principal": "other"}) == {
            "event": "x", "request_id": "r1", "principal": "other"}
    finally:
        REQUEST_FIELDS.reset(token)


async def test_access_lines_carry_the_request_id_and_the_caller(server: Server, world: World,
                                                                log_lines: io.StringIO) -> None:
    device = world.device("san-1")
    async with aiohttp.ClientSession() as http:
        for rid, token in (("req-one", device.token), ("req-two", "fsd_not-a-token")):
            async with http.get(server.url + "/v1/catalog",
                                headers={"Authorization": f"Bearer {token}", "X-Request-Id": rid}) as r:
                await r.read()
                assert r.headers["X-Request-Id"] == rid
    lines = [json.loads(ln) for ln in log_lines.getvalue().splitlines() if ln.startswith("{")]
    access = {ln["request_id"]: ln for ln in lines if ln.get("event") == "http.request"}
    assert access["req-one"]["principal"] == device.device_id and access["req-one"]["status"] == 200
    assert access["req-two"]["status"] == 401 and "principal" not in access["req-two"]  # never the previous caller's
