"""A device's contact is written at most once a minute per process, and the memo that skips the writes stays bounded."""

from sync_server.auth import TouchMemo


def test_touch_is_due_once_per_interval_per_device() -> None:
    memo = TouchMemo(interval_s=60.0, max_entries=3)
    assert memo.due("dev-a", 1000.0) is True
    assert memo.due("dev-a", 1059.9) is False  # within the minute: no round trip
    assert memo.due("dev-b", 1059.9) is True  # another device is its own line
    assert memo.due("dev-a", 1060.0) is True  # a minute later: written again
    assert memo.due("dev-a", 1060.5) is False


def test_memo_forgets_everything_rather_than_grow() -> None:
    memo = TouchMemo(interval_s=60.0, max_entries=2)
    assert memo.due("a", 0.0) and memo.due("b", 0.0)
    assert memo.due("c", 1.0) is True  # full: cleared, then c remembered
    assert memo.due("a", 2.0) is True  # a was forgotten: one more (harmless) UPDATE
    assert memo.due("c", 2.0) is False
