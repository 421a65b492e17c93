"""Alert channels: Slack incoming webhooks, SMTP email, PagerDuty Events v2, generic webhooks.

Each channel module has ``send(settings, notification, policy) -> Delivery``. ``settings`` are
the channel's ``config`` merged with its ``configSecretRefs`` values (read at send time by the
caller); nothing here logs them, stores them or puts them in an error: a Delivery's ``detail``
names at most the receiving host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gpu_cost_pipeline.integrations.notify import email, pagerduty, slack, webhook
from gpu_cost_pipeline.integrations.notify.base import (
    Delivery,
    Notification,
    RetryPolicy,
)

__all__ = ["CHANNELS", "Delivery", "Notification", "RetryPolicy", "send"]

CHANNELS: dict[str, Callable[[Mapping[str, object], Notification, RetryPolicy], Delivery]] = {
    "slack": slack.send,
    "email": email.send,
    "pagerduty": pagerduty.send,
    "webhook": webhook.send,
}


def send(
    channel_type: str,
    settings: Mapping[str, object],
    notification: Notification,
    policy: RetryPolicy | None = None,
) -> Delivery:
    return CHANNELS[channel_type](settings, notification, policy or RetryPolicy())
