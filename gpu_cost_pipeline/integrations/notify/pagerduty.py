"""PagerDuty Events API v2: trigger and resolve with one dedup_key per (budget, alert, period),
so PagerDuty itself also folds any repeat into the same incident."""

from __future__ import annotations

import json
from collections.abc import Mapping

from gpu_cost_pipeline.integrations.notify.base import (
    Delivery,
    Notification,
    RetryPolicy,
    post_json,
    setting,
)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def payload(routing_key: str, notification: Notification) -> dict:
    event: dict = {
        "routing_key": routing_key,
        "event_action": notification.action,
        "dedup_key": notification.dedup_key[:255],
    }
    if not notification.resolved:
        event["payload"] = {
            "summary": notification.title[:1024],
            "source": notification.source,
            "severity": notification.severity,
            "timestamp": notification.timestamp.isoformat(),
            "component": notification.component,
            "group": notification.group,
            "class": "gpu-budget",
            "custom_details": {"message": notification.text, **notification.details},
        }
    return event


def send(
    settings: Mapping[str, object], notification: Notification, policy: RetryPolicy
) -> Delivery:
    body = json.dumps(payload(str(settings["routing_key"]), notification)).encode()
    url = str(setting(dict(settings), "events_url", EVENTS_URL))
    # 202 accepted; 400 is a malformed event (do not retry); 429 and 5xx retry.
    return post_json(
        url, body, policy, accepted=lambda r: r.status_code == 202 or r.status_code == 200
    )
