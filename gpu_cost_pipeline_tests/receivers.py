"""Real alert receivers on 127.0.0.1 for tests: an HTTP server standing in for Slack incoming
webhooks, PagerDuty's Events API and generic webhooks (scriptable: 429 with Retry-After, 500,
400), and an SMTP server (aiosmtpd) with STARTTLS and AUTH."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """POSTs are recorded in ``received``; ``script(path, [(status, headers), ...])`` answers the
    next requests to ``path`` in that order, then the default: 202 for paths containing
    "pagerduty" (as the Events API), else 200 ``ok`` (as Slack)."""

    received: list[Received] = field(default_factory=list)
    scripted: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, answers: list[tuple[int, dict]]) -> None:
        with self.lock:
            self.scripted[path] = list(answers)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def _answer(self, path: str) -> tuple[int, dict]:
        with self.lock:
            queue = self.scripted.get(path) or []
            if queue:
                return queue.pop(0)
        return (202, {}) if "pagerduty" in path else (200, {})


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers = receiver._answer(self.path)
            if status < 300:  # only accepted deliveries count as received
                with receiver.lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
            payload = b"ok" if status == 200 else json.dumps({"status": str(status)}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.server = server
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SmtpReceiver:
    port: int
    certificate: Path
    messages: list[Any] = field(default_factory=list)  # email.message.Message
    logins: list[str] = field(default_factory=list)
    tls_sessions: int = 0


@contextmanager
def smtp_receiver(
    folder: Path, username: str, password: str, port: int | None = None
) -> Iterator[SmtpReceiver]:
    """aiosmtpd on 127.0.0.1 requiring STARTTLS before AUTH, accepting ``username``/``password``."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = self_signed_certificate(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    receiver = SmtpReceiver(port=0, certificate=cert)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            receiver.messages.append(message_from_bytes(envelope.content))
            if session.ssl:
                receiver.tls_sessions += 1
            return "250 Message accepted for delivery"

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (username, password)
        if ok:
            receiver.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    port = port or free_port()  # aiosmtpd needs a port number up front
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    receiver.port = port
    try:
        yield receiver
    finally:
        controller.stop()
