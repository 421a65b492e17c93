"""Splitting a partition window into chunks, so long windows run in bounded memory."""

from __future__ import annotations

from datetime import datetime, timedelta


def window_chunks(
    start: datetime, end: datetime, chunk_minutes: int
) -> list[tuple[datetime, datetime]]:
    """Consecutive [start, end) pieces of at most ``chunk_minutes`` covering the window."""
    if chunk_minutes < 1:
        raise ValueError(f"chunk_minutes must be at least 1, got {chunk_minutes}")
    step = timedelta(minutes=chunk_minutes)
    chunks = []
    cursor = start
    while cursor < end:
        chunks.append((cursor, min(cursor + step, end)))
        cursor += step
    return chunks
