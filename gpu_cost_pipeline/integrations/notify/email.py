"""Email over SMTP: STARTTLS (unless ``starttls: false`` or ``ssl: true`` for implicit TLS),
login when a username is set, a plain-text body with an HTML alternative."""

from __future__ import annotations

import html
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage

from gpu_cost_pipeline.integrations.notify.base import (
    FAILED,
    REJECTED,
    SENT,
    Delivery,
    Notification,
    RetryPolicy,
    setting,
)


def _flag(value: object, default: bool) -> bool:
    if value is None:
        return default
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _recipients(value: object) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def message(settings: Mapping[str, object], notification: Notification) -> EmailMessage:
    mail = EmailMessage()
    prefix = "[RESOLVED]" if notification.resolved else f"[{notification.severity.upper()}]"
    mail["Subject"] = f"{prefix} {notification.title}"
    mail["From"] = str(settings["from"])
    mail["To"] = ", ".join(_recipients(settings["to"]))
    lines = [notification.text, ""] + [f"{k}: {v}" for k, v in notification.details.items()]
    mail.set_content("\n".join(lines))
    rows = "".join(
        f"<tr><th align='left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in notification.details.items()
    )
    mail.add_alternative(
        f"<p><strong>{html.escape(notification.title)}</strong></p>"
        f"<p>{html.escape(notification.text)}</p><table>{rows}</table>",
        subtype="html",
    )
    return mail


def send(
    settings: Mapping[str, object], notification: Notification, policy: RetryPolicy
) -> Delivery:
    values = dict(settings)
    host = str(values["smtp_host"])
    implicit_tls = _flag(setting(values, "ssl"), False)
    port = int(setting(values, "smtp_port", 465 if implicit_tls else 587))  # type: ignore[arg-type]
    starttls = _flag(setting(values, "starttls"), not implicit_tls)
    username, password = setting(values, "username"), setting(values, "password")
    context = ssl.create_default_context()
    if _flag(setting(values, "tls_insecure_skip_verify"), False):
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    mail = message(values, notification)
    detail = ""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            client_class = smtplib.SMTP_SSL if implicit_tls else smtplib.SMTP
            extra = {"context": context} if implicit_tls else {}
            with client_class(host, port, timeout=policy.timeout_seconds, **extra) as client:
                if starttls:
                    client.starttls(context=context)
                if username:
                    client.login(str(username), str(password or ""))
                client.send_message(mail)
            return Delivery(SENT, attempt, f"{host}:{port}: accepted")
        except smtplib.SMTPAuthenticationError as error:
            return Delivery(REJECTED, attempt, f"{host}:{port}: login refused ({error.smtp_code})")
        except smtplib.SMTPRecipientsRefused:
            return Delivery(REJECTED, attempt, f"{host}:{port}: recipients refused")
        except smtplib.SMTPNotSupportedError as error:
            return Delivery(REJECTED, attempt, f"{host}:{port}: {str(error)[:120]}")
        except smtplib.SMTPResponseException as error:
            detail = f"{host}:{port}: SMTP {error.smtp_code}"
            if 500 <= error.smtp_code < 600:
                return Delivery(REJECTED, attempt, detail)
        except (smtplib.SMTPException, OSError) as error:
            detail = f"{host}:{port}: {type(error).__name__}"
        if attempt < policy.max_attempts:
            policy.sleep(policy.wait(attempt, None))
    return Delivery(FAILED, policy.max_attempts, detail)
