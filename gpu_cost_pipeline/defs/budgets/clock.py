"""The time the budget machinery acts at: one function, so a test can move it to a new month."""

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
