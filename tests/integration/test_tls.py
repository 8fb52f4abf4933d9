"""TLS on the main port: wss:// and https:// with a certificate the test generates.

A real TLS WebSocket client (websockets) and a real HTTPS client (urllib) trust exactly that
certificate; a plain-HTTP client on the TLS port gets no answer and the server carries on.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import APP_KEY, TIMEOUT, PusherSocket, ServerProcess, signed_url

PASSPHRASE = "correct horse battery staple"


class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, its key in the clear and encrypted."""

    def __init__(self, folder: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastrelay test")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert = folder / "cert.pem"
        self.key = folder / "key.pem"
        self.encrypted_key = folder / "key-encrypted.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.encrypted_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(PASSPHRASE.encode()),
            )
        )

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server against this certificate only (hostname checked too)."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


def https(url: str) -> str:
    assert url.startswith("http://")
    return "https://" + url[len("http://") :]


def fetch(
    context: ssl.SSLContext, method: str, url: str, body: bytes | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def connect_tls(srv: ServerProcess, context: ssl.SSLContext) -> PusherSocket:
    url = f"wss://127.0.0.1:{srv.port}/app/{APP_KEY}?protocol=7&client=test&version=1"
    ws = await websockets.connect(url, ssl=context, open_timeout=TIMEOUT)
    sock = PusherSocket(ws)
    established = await sock.recv()
    assert established["event"] == "pusher:connection_established", established
    sock.socket_id = json.loads(established["data"])["socket_id"]
    return sock


async def publish_over_https(
    srv: ServerProcess, context: ssl.SSLContext, channel: str, data: str
) -> tuple[int, bytes]:
    body = json.dumps({"name": "greeting", "channel": channel, "data": data}).encode()
    url = https(signed_url(srv, "POST", "/apps/1/events", body))
    return await asyncio.to_thread(fetch, context, "POST", url, body)


async def test_wss_subscribe_and_https_publish(make_server: Any, certificate: Certificate) -> None:
    srv = make_server(
        {"RELAY_SSL_CERT": str(certificate.cert), "RELAY_SSL_KEY": str(certificate.key)}
    )
    assert f"listening on https://127.0.0.1:{srv.port}" in srv.wait_for_log("listening on")
    context = certificate.client_context()
    client = await connect_tls(srv, context)
    reply = await client.subscribe("tls-news")
    assert reply["event"] == "pusher_internal:subscription_succeeded"

    status, body = await publish_over_https(srv, context, "tls-news", "hello over TLS")
    assert (status, json.loads(body)) == (200, {})
    event = await client.expect("greeting")
    assert (event["channel"], event["data"]) == ("tls-news", "hello over TLS")

    # The Pusher protocol's own keep-alive over TLS.
    await client.send("pusher:ping", {})
    assert (await client.expect("pusher:pong"))["event"] == "pusher:pong"
    await client.close()


def plain_http_exchange(port: int) -> bytes:
    """Send a plain HTTP request to the TLS port; return whatever comes back before EOF."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def test_plain_http_on_the_tls_port_fails_cleanly(
    make_server: Any, certificate: Certificate
) -> None:
    srv = make_server(
        {"RELAY_SSL_CERT": str(certificate.cert), "RELAY_SSL_KEY": str(certificate.key)}
    )
    context = certificate.client_context()
    before = await connect_tls(srv, context)

    # The server closes the connection (at most with a TLS alert); no HTTP answer leaks out.
    answer = await asyncio.to_thread(plain_http_exchange, srv.port)
    assert not answer.startswith(b"HTTP/"), answer
    # An HTTP client library sees a failed request, not a hang.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        await asyncio.to_thread(
            urllib.request.urlopen, f"http://127.0.0.1:{srv.port}/up", timeout=TIMEOUT
        )

    # Still serving: the connection from before is alive, new TLS clients get in.
    await before.send("pusher:ping", {})
    assert (await before.expect("pusher:pong"))["event"] == "pusher:pong"
    status, body = await asyncio.to_thread(
        fetch, context, "GET", f"https://127.0.0.1:{srv.port}/up"
    )
    assert (status, json.loads(body)) == (200, {"health": "OK"})
    after = await connect_tls(srv, context)
    await after.close()
    await before.close()
    assert not [line for line in srv.lines if "Traceback" in line or " ERROR " in line]


async def test_soketi_variables_and_an_encrypted_key(
    make_server: Any, certificate: Certificate
) -> None:
    srv = make_server(
        {
            "SOKETI_SSL_CERT": str(certificate.cert),
            "SOKETI_SSL_KEY": str(certificate.encrypted_key),
            "SOKETI_SSL_PASS": PASSPHRASE,
        }
    )
    context = certificate.client_context()
    status, body = await asyncio.to_thread(fetch, context, "GET", f"https://127.0.0.1:{srv.port}/")
    assert (status, body) == (200, b"OK")
    client = await connect_tls(srv, context)
    await client.close()
    assert not [line for line in srv.lines if PASSPHRASE in line]


def test_wrong_passphrase_is_a_one_line_error(certificate: Certificate) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SOKETI_", "REVERB_"))
    }
    env.update(
        RELAY_SSL_CERT=str(certificate.cert),
        RELAY_SSL_KEY=str(certificate.encrypted_key),
        RELAY_SSL_PASSPHRASE="not the passphrase",
    )
    result = subprocess.run(
        [sys.executable, "-m", "fastrelay", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fastrelay: error:")]
    assert len(errors) == 1 and "TLS: cannot load certificate" in errors[0], result.stderr
    assert "not the passphrase" not in result.stderr
    assert "listening on" not in result.stderr
