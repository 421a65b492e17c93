"""Alert channels against real receivers on 127.0.0.1: HTTP (Slack, PagerDuty, webhook) with
429/Retry-After and 500, and SMTP (aiosmtpd) with STARTTLS and login."""

from __future__ import annotations

import hashlib
import hmac
import socket
from pathlib import Path

import pytest

from gpu_cost_pipeline.integrations import notify
from gpu_cost_pipeline.integrations.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from gpu_cost_pipeline_tests.receivers import http_receiver, smtp_receiver

SLACK_SECRET_PATH = "/services/T000/B000/XXXXSECRET"


def alert(action: str = "trigger") -> notify.Notification:
    return notify.Notification(
        title="CostBudget ml/team-budget: budget-warning — 85% of $10,000 used",
        text="GPU spend for 2026-11 is $8,500.00 of the $10,000.00 monthly limit (85.0%).",
        severity="warning",
        action=action,
        dedup_key="gpu-budget/default/ml/team-budget/budget-warning/2026-11",
        source="CostBudget ml/team-budget",
        details={"spend": "$8,500.00", "period": "2026-11"},
    )


class Waits:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def policy(waits: Waits, attempts: int = 4) -> notify.RetryPolicy:
    return notify.RetryPolicy(max_attempts=attempts, backoff_seconds=0.5, sleep=waits)


def test_slack_retries_429_after_retry_after_and_500_with_backoff():
    waits = Waits()
    with http_receiver() as receiver:
        receiver.script(SLACK_SECRET_PATH, [(429, {"Retry-After": "3"}), (500, {})])
        delivery = notify.send(
            "slack", {"webhook_url": receiver.url(SLACK_SECRET_PATH)}, alert(), policy(waits)
        )
        (message,) = receiver.to(SLACK_SECRET_PATH)
    assert (delivery.outcome, delivery.attempts) == ("sent", 3)
    assert waits.seconds == [3.0, 1.0]  # Retry-After honoured, then back-off (0.5 × 2)
    assert "SECRET" not in delivery.detail and "127.0.0.1" in delivery.detail
    assert message.json["text"].startswith("CostBudget ml/team-budget")
    assert message.json["blocks"][0]["text"]["text"].startswith(":warning:")


def test_attempts_are_bounded_and_a_400_is_not_retried():
    waits = Waits()
    with http_receiver() as receiver:
        receiver.script("/hook", [(503, {})] * 5)
        failed = notify.send("webhook", {"url": receiver.url("/hook")}, alert(), policy(waits, 3))
        receiver.script("/pagerduty", [(400, {})])
        refused = notify.send(
            "pagerduty",
            {"routing_key": "R0UTING", "events_url": receiver.url("/pagerduty")},
            alert(),
            policy(waits),
        )
    assert (failed.outcome, failed.attempts) == ("failed", 3)
    assert (refused.outcome, refused.attempts) == ("rejected", 1)
    assert "R0UTING" not in refused.detail


def test_pagerduty_trigger_and_resolve_share_the_dedup_key():
    with http_receiver() as receiver:
        settings = {"routing_key": "R0UTING", "events_url": receiver.url("/pagerduty")}
        assert notify.send("pagerduty", settings, alert(), policy(Waits())).outcome == "sent"
        assert (
            notify.send("pagerduty", settings, alert("resolve"), policy(Waits())).outcome == "sent"
        )
        trigger, resolve = (r.json for r in receiver.to("/pagerduty"))
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["routing_key"] == "R0UTING"
    assert trigger["payload"]["severity"] == "warning"
    assert trigger["payload"]["source"] == "CostBudget ml/team-budget"
    assert len(trigger["payload"]["summary"]) <= 1024 and "payload" not in resolve


def test_webhook_signs_the_body_with_hmac_sha256():
    with http_receiver() as receiver:
        notify.send(
            "webhook", {"url": receiver.url("/hook"), "secret": "shh"}, alert(), policy(Waits())
        )
        notify.send("webhook", {"url": receiver.url("/plain")}, alert(), policy(Waits()))
        (signed,) = receiver.to("/hook")
        (plain,) = receiver.to("/plain")
    headers = {k.lower(): v for k, v in signed.headers.items()}
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    expected = hmac.new(b"shh", timestamp.encode() + b"." + signed.body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] == f"sha256={expected}"
    assert signed.json["dedupKey"] == alert().dedup_key
    assert SIGNATURE_HEADER.lower() not in {k.lower() for k in plain.headers}


def test_email_over_starttls_with_login(tmp_path: Path):
    with smtp_receiver(tmp_path, "alerts", "p4ss") as smtp:
        settings = {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "from": "gpu-costs@example.com",
            "to": ["a@example.com", "b@example.com"],
            "username": "alerts",
            "password": "p4ss",
            "tls_insecure_skip_verify": True,  # the receiver's certificate is self-signed
        }
        delivery = notify.send("email", settings, alert(), policy(Waits()))
        wrong = notify.send("email", {**settings, "password": "nope"}, alert(), policy(Waits()))
    assert delivery.outcome == "sent", delivery.detail
    assert wrong.outcome == "rejected" and "nope" not in wrong.detail
    (mail,) = smtp.messages
    assert smtp.logins == ["alerts"] and smtp.tls_sessions == 1
    assert mail["Subject"].startswith("[WARNING] CostBudget ml/team-budget")
    assert mail["To"] == "a@example.com, b@example.com"
    kinds = [part.get_content_type() for part in mail.walk()]
    assert "text/plain" in kinds and "text/html" in kinds


def test_unreachable_smtp_server_fails_after_bounded_attempts():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits = Waits()
    settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "from": "a@x", "to": "b@x"}
    delivery = notify.send("email", settings, alert(), policy(waits, 2))
    assert (delivery.outcome, delivery.attempts) == ("failed", 2)
    assert "ConnectionRefusedError" in delivery.detail and len(waits.seconds) == 1


@pytest.mark.parametrize("channel", ["slack", "webhook"])
def test_a_receiver_that_is_down_is_a_failed_delivery(channel: str):
    with http_receiver() as receiver:
        url = receiver.url("/gone")
    key = "webhook_url" if channel == "slack" else "url"
    delivery = notify.send(channel, {key: url}, alert(), policy(Waits(), 2))
    assert delivery.outcome == "failed" and "ConnectionError" in delivery.detail
