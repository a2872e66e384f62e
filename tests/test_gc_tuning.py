"""`fieldsync serve` tunes the cyclic collector once the app is up (cli_serve.tune_gc): what it must and must not do."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sync_server.cli_serve import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process gets its collector back as it was."""
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Node:
    """Something that can take part in a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_startup_objects_are_frozen_and_young_collections_are_rarer(restored_gc: None) -> None:
    _, gen1, gen2 = gc.get_threshold()
    tune_gc()
    assert gc.get_threshold() == (10_000, gen1, gen2)
    assert gc.get_freeze_count() > 0


def test_cycles_made_after_startup_are_still_collected(restored_gc: None) -> None:
    tune_gc()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    del a, b
    assert probe() is not None  # a cycle: reference counting alone cannot free it
    gc.collect()
    assert probe() is None
