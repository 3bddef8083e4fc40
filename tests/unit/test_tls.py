"""The client's shared TLS context: the trust store waits for the first handshake, and
verification is as strict as ssl.create_default_context()'s. A real TLS server on loopback with
a certificate made by the openssl CLI."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyscore.client import http1, tls
from pyscore.client.httpio import Connections, get_range
from pyscore.client.retry import Transient
from tests.conftest import need


@pytest.fixture(scope="module")
def https_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 serving 'hello'; yields its URL and its certificate."""
    need("openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(206)
            self.send_header("Content-Range", "bytes 0-4/5")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/object", cert
    finally:
        server.shutdown()
        server.server_close()


def fresh() -> tls.LazyTrust:
    return tls.LazyTrust(ssl.PROTOCOL_TLS_CLIENT)


def fetch(url: str, context: ssl.SSLContext) -> bytes:
    """The object bytes through the download engine's byte path."""
    conns = Connections(5)
    conns.context = context
    got = bytearray(5)

    def sink(chunk: memoryview, offset: int) -> None:
        got[offset : offset + len(chunk)] = chunk

    try:
        get_range(conns, url, 0, 5, memoryview(bytearray(5)), sink, "object")
    finally:
        conns.close()
    return bytes(got)


def test_creating_the_context_loads_no_certificates():
    context = fresh()
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def api_get(url: str, context: ssl.SSLContext) -> bytes:
    """The bytes through the JSON API calls' connection pool."""
    pool = http1.Pool(5, 5, context=context)
    try:
        return pool.fetch("GET", url, {}).content
    finally:
        pool.close()


def test_an_untrusted_certificate_is_refused_by_the_api_calls_and_the_byte_path(https_server):
    url, _ = https_server
    context = fresh()
    with pytest.raises(http1.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        api_get(url, context)
    assert context.cert_store_stats()["x509_ca"] > 0  # loaded at the handshake
    with pytest.raises(Transient) as refused:
        fetch(url, context)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value.__cause__)


def test_a_certificate_trusted_through_ssl_cert_file_is_accepted(https_server, monkeypatch):
    url, cert = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as an operator with a private CA does
    context = fresh()
    assert api_get(url, context) == b"hello"
    assert fetch(url, context) == b"hello"
