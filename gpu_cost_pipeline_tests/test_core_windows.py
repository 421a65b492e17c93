"""window_chunks: consecutive pieces that cover a window exactly."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from gpu_cost_pipeline.core.windows import window_chunks

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_chunks_cover_the_window_with_a_shorter_last_chunk() -> None:
    assert window_chunks(T0, at(25), 10) == [(T0, at(10)), (at(10), at(20)), (at(20), at(25))]


def test_exact_multiple() -> None:
    assert window_chunks(T0, at(20), 10) == [(T0, at(10)), (at(10), at(20))]


def test_chunk_longer_than_window() -> None:
    assert window_chunks(T0, at(3), 60) == [(T0, at(3))]


def test_one_minute_chunks_of_a_day() -> None:
    chunks = window_chunks(T0, at(1440), 1)
    assert len(chunks) == 1440
    assert chunks[0] == (T0, at(1))
    assert chunks[-1] == (at(1439), at(1440))
    assert all(a[1] == b[0] for a, b in pairwise(chunks))


def test_empty_window() -> None:
    assert window_chunks(T0, T0, 10) == []


@pytest.mark.parametrize("chunk_minutes", [0, -5])
def test_chunk_minutes_below_one_raises(chunk_minutes: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        window_chunks(T0, at(10), chunk_minutes)
