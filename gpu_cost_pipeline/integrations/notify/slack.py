"""Slack incoming webhooks: POST {"text", "blocks"}; Slack answers 200 ``ok``."""

from __future__ import annotations

import json
from collections.abc import Mapping

from gpu_cost_pipeline.integrations.notify.base import (
    Delivery,
    Notification,
    RetryPolicy,
    post_json,
)

_ICONS = {
    "info": ":information_source:",
    "warning": ":warning:",
    "error": ":x:",
    "critical": ":rotating_light:",
}


def payload(notification: Notification) -> dict:
    icon = ":white_check_mark:" if notification.resolved else _ICONS.get(notification.severity, "")
    headline = f"{icon} *{notification.title}*".strip()
    fields = [
        {"type": "mrkdwn", "text": f"*{key}*\n{value}"}
        for key, value in list(notification.details.items())[:10]
    ]
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notification.text}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    return {"text": f"{notification.title}: {notification.text}", "blocks": blocks}


def send(
    settings: Mapping[str, object], notification: Notification, policy: RetryPolicy
) -> Delivery:
    body = json.dumps(payload(notification)).encode()
    return post_json(str(settings["webhook_url"]), body, policy)
