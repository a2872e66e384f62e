"""protocol.fields keeps the ids it parsed: a cached answer must be exactly what parsing gives, first time or later."""

from __future__ import annotations

from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from protocol import fields
from protocol.fields import WireUUID

ADAPTER = TypeAdapter(WireUUID)
HEX = "0123456789abcdefABCDEF"
# canonical ids, and near misses: a character swapped for any other, one dropped, one added, a newline at the end
canonical = st.builds(lambda parts: "-".join(parts), st.tuples(*(st.text(HEX, min_size=n, max_size=n) for n in (8, 4, 4, 4, 12))))
near = st.one_of(
    canonical,
    st.tuples(canonical, st.integers(0, 35), st.characters()).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),
    st.tuples(canonical, st.integers(0, 35)).map(lambda t: t[0][: t[1]] + t[0][t[1] + 1 :]),
    canonical.map(lambda s: s + "\n"),
    canonical.map(lambda s: "{" + s + "}"),
    st.text(max_size=40),
)


def _outcome(text: str) -> tuple[str, object]:
    try:
        return "ok", ADAPTER.validate_python(text)
    except ValidationError as exc:
        return "error", [(e["type"], e["msg"]) for e in exc.errors()]


@settings(max_examples=300, deadline=None)
@given(near)
def test_cached_and_fresh_answers_agree(text: str) -> None:
    fields._UUID_CACHE.clear()
    first = _outcome(text)  # parsed (and cached when accepted)
    again = _outcome(text)  # served from the cache when it was accepted
    fields._UUID_CACHE.clear()
    assert first == again == _outcome(text)
    if first[0] == "ok":
        assert first[1] == UUID(text) and str(first[1]) == text.lower()


def test_hand_written_ids() -> None:
    fields._UUID_CACHE.clear()
    text = "7C9E6679-7425-40DE-944B-E07FC1F90AE7"
    assert ADAPTER.validate_python(text) == UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
    assert ADAPTER.validate_python(text) == UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")
    for bad in ("7c9e667974254 0de944be07fc1f90ae7", "7c9e6679742540de944be07fc1f90ae7", "{7c9e6679-7425-40de-944b-e07fc1f90ae7}"):
        for _ in range(2):
            with pytest.raises(ValidationError, match="expected a canonical UUID string"):
                ADAPTER.validate_python(bad)
    assert "7c9e6679742540de944be07fc1f90ae7" not in fields._UUID_CACHE


def test_the_cache_is_bounded() -> None:
    fields._UUID_CACHE.clear()
    for i in range(fields._UUID_CACHE_MAX + 10):
        ADAPTER.validate_python(str(UUID(int=i)))
    assert len(fields._UUID_CACHE) <= fields._UUID_CACHE_MAX
    assert ADAPTER.validate_python(str(UUID(int=3))) == UUID(int=3)
