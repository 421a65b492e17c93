"""JSON over HTTP for the price APIs reached with requests (GCP Cloud Billing Catalog, Azure
Retail Prices): bounded retries with back-off that honour ``Retry-After``, then a clear failure.

Messages name the host and path only: query strings and headers (where API keys travel) never
reach a log line or an exception.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class PriceApiError(RuntimeError):
    """A price API did not give a usable answer within the allowed attempts."""


def where(url: str) -> str:
    """Host and path of a URL, without its query (which may hold filters or keys)."""
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


class JsonClient:
    """GET JSON with retries. ``attempts`` bounds tries per request; waits double from
    ``backoff_seconds`` (with jitter), a server's ``Retry-After`` wins, and no wait exceeds
    ``max_wait_seconds``."""

    def __init__(
        self,
        session: requests.Session,
        attempts: int = 5,
        backoff_seconds: float = 1.0,
        max_wait_seconds: float = 60.0,
        timeout_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.max_wait_seconds = max_wait_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep
        self.log = log or (lambda message: None)

    def get(
        self, url: str, params: Mapping[str, Any] | None = None, what: str = "price API"
    ) -> Any:
        problem = ""
        for attempt in range(1, self.attempts + 1):
            wait: float | None = None
            try:
                response = self.session.get(url, params=params, timeout=self.timeout_seconds)
            except requests.RequestException as error:
                # The exception's text can quote the full URL: name only its type.
                problem = f"{type(error).__name__} reaching {where(url)}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        problem = f"an answer from {where(url)} that is not JSON"
                elif response.status_code in RETRYABLE_STATUS:
                    problem = f"HTTP {response.status_code} from {where(url)}"
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                else:
                    raise PriceApiError(
                        f"{what}: HTTP {response.status_code} from {where(url)}: "
                        f"{_brief(response.text)}"
                    )
            if attempt == self.attempts:
                break
            if wait is None:
                wait = self.backoff_seconds * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            wait = min(wait, self.max_wait_seconds)
            self.log(f"{what}: {problem}; retry {attempt}/{self.attempts - 1} in {wait:.1f} s")
            self.sleep(wait)
        raise PriceApiError(f"{what}: {problem} after {self.attempts} attempts")


def _brief(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
