"""Generic webhooks: POST the notification as JSON; with a ``secret``, the body is signed with
HMAC-SHA256 in ``X-GPU-Autoscaler-Signature: sha256=<hex>`` (and the time it was signed in
``X-GPU-Autoscaler-Timestamp``, also covered by the signature, against replays)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from gpu_cost_pipeline.integrations.notify.base import (
    Delivery,
    Notification,
    RetryPolicy,
    post_json,
    setting,
)

SIGNATURE_HEADER = "X-GPU-Autoscaler-Signature"
TIMESTAMP_HEADER = "X-GPU-Autoscaler-Timestamp"


def payload(notification: Notification) -> dict:
    return {
        "title": notification.title,
        "text": notification.text,
        "severity": notification.severity,
        "action": notification.action,
        "dedupKey": notification.dedup_key,
        "source": notification.source,
        "timestamp": notification.timestamp.isoformat(),
        "details": notification.details,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """What a receiver recomputes: HMAC-SHA256 over ``<timestamp>.<body>``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def send(
    settings: Mapping[str, object], notification: Notification, policy: RetryPolicy
) -> Delivery:
    body = json.dumps(payload(notification)).encode()
    headers = {}
    secret = setting(dict(settings), "secret")
    if secret:
        timestamp = str(int(notification.timestamp.timestamp()))
        headers = {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(str(secret), timestamp, body),
        }
    return post_json(str(settings["url"]), body, policy, headers=headers)
