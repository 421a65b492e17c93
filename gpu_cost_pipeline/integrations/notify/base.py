"""What every channel shares: the notification, the outcome, and bounded retries over HTTP
that honour ``Retry-After``."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests

SENT, FAILED, REJECTED = "sent", "failed", "rejected"  # rejected: retrying cannot help


@dataclass(frozen=True)
class Notification:
    """One alert or its resolution, channel-neutral."""

    title: str
    text: str
    severity: str  # info | warning | error | critical
    action: str  # trigger | resolve
    dedup_key: str  # stable per (budget, alert, period): PagerDuty's dedup_key
    source: str  # the object it is about, e.g. "CostBudget ml/team-budget"
    component: str = "gpu-cost-pipeline"
    group: str = ""
    details: dict = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def resolved(self) -> bool:
        return self.action == "resolve"


@dataclass(frozen=True)
class Delivery:
    outcome: str  # sent | failed | rejected
    attempts: int
    detail: str  # safe to log and store: status codes and the receiving host only


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential back-off; a Retry-After from the receiver wins (up to
    ``max_wait_seconds``)."""

    max_attempts: int = 4
    backoff_seconds: float = 1.0
    max_wait_seconds: float = 30.0
    timeout_seconds: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int, retry_after: float | None) -> float:
        wait = retry_after if retry_after is not None else self.backoff_seconds * 2 ** (attempt - 1)
        return min(max(wait, 0.0), self.max_wait_seconds)


def host_of(url: str) -> str:
    """Where a URL points, without path or query (a Slack webhook's path is its secret)."""
    parts = urlsplit(url)
    return parts.hostname or "(no host)"


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def post_json(
    url: str,
    body: bytes,
    policy: RetryPolicy,
    headers: dict[str, str] | None = None,
    accepted: Callable[[requests.Response], bool] = lambda r: 200 <= r.status_code < 300,
    permanent: Callable[[requests.Response], bool] = lambda r: (
        r.status_code in (400, 401, 403, 404, 410, 413, 422)
    ),
) -> Delivery:
    """POST ``body`` (JSON) with bounded retries: 429 and 5xx and connection errors retry after
    Retry-After or back-off; the statuses ``permanent`` names do not."""
    host = host_of(url)
    detail = ""
    for attempt in range(1, policy.max_attempts + 1):
        retry_after = None
        try:
            response = requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=policy.timeout_seconds,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            detail = f"{host}: {type(error).__name__}"
        else:
            if accepted(response):
                return Delivery(SENT, attempt, f"{host}: HTTP {response.status_code}")
            detail = f"{host}: HTTP {response.status_code}"
            if permanent(response):
                return Delivery(REJECTED, attempt, detail)
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if attempt < policy.max_attempts:
            policy.sleep(policy.wait(attempt, retry_after))
    return Delivery(FAILED, policy.max_attempts, detail)


def setting(settings: dict, key: str, default: object = None) -> object:
    value = settings.get(key, default)
    return default if value in (None, "") else value
