"""The console's sign-in back-off, pinned by hand: free failures, then a doubling wait from the configured base, capped."""

from __future__ import annotations

import pytest

from sync_server.web.console.session import wait_seconds


@pytest.mark.parametrize(("failures", "since_last", "base", "expected"), [
    (0, 0.0, 2.0, 0),
    (2, 0.0, 2.0, 0),       # three attempts are free
    (3, 0.0, 2.0, 2),       # the fourth waits the base
    (3, 1.5, 2.0, 1),       # part of the wait already passed (rounded up)
    (3, 2.0, 2.0, 0),
    (4, 0.0, 2.0, 4),       # doubling
    (5, 0.0, 2.0, 8),
    (3, 0.0, 120.0, 120),
    (40, 0.0, 2.0, 300),    # capped at five minutes
])
def test_wait_seconds(failures: int, since_last: float, base: float, expected: int) -> None:
    assert wait_seconds(failures, since_last, base) == expected
