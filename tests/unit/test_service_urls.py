"""What a failure to reach a service says: on first contact it is the URL setting's (one
line, exit 2, at once); once the service has answered in this run, the same failure is a
restart or a blip, retried. And what a refusal of many files says."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from http.server import BaseHTTPRequestHandler

import pytest

from pyscore.client import api as api_module
from pyscore.client import http1, retry
from pyscore.client.api import Api, first_contact_problem, refusal_summary, token_scopes
from pyscore.client.config import DEFAULTS, ClientSettings
from pyscore.client.errors import EXIT_UNREACHABLE, AuthError, SettingError, UnreachableError
from tests.loopback import Loopback

OBJECT = "5b0e8f1c-6c1e-4b3a-9a51-1f0d2c3b4a59"


def settings(url: str, retries: int = 2) -> ClientSettings:
    values = {**DEFAULTS, "metadata.url": url, "storage.url": url}
    values["storage.retryNumber"] = str(retries)
    return ClientSettings(values, {"metadata.url": "environment", "storage.url": "environment"})


def answer_entity(h: BaseHTTPRequestHandler) -> None:
    body = json.dumps(
        {"id": OBJECT, "gnosId": "a", "fileName": "f.bam", "projectCode": "S", "access": "open"}
    ).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Connection", "close")  # the next call connects anew
    h.close_connection = True
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def backoffs(monkeypatch) -> list[float]:
    """The back-offs the client's calls would sleep, recorded instead of slept; a tenth ends
    the call (AssertionError), so a call retried forever fails the test at once."""
    slept: list[float] = []

    def record(seconds: float) -> None:
        slept.append(seconds)
        assert len(slept) < 10, "retried again and again"

    def retrying(call, attempts, on_retry=None, sleep=None):
        return retry.retrying(call, attempts, on_retry, record)

    monkeypatch.setattr(api_module, "retrying", retrying)
    return slept


def test_a_refusal_after_the_service_answered_is_retried_not_blamed_on_the_setting(backoffs):
    server = Loopback(answer_entity)
    api = Api(settings(server.url, retries=2))
    try:
        assert api.entity(OBJECT).fileName == "f.bam"
        server.close()  # the server goes away mid-run (a restart): connections are refused
        with pytest.raises(UnreachableError) as raised:
            api.entity(OBJECT)
        assert raised.value.exit_code == EXIT_UNREACHABLE
    finally:
        api.close()
    assert len(backoffs) == 1  # two tries: one back-off between them


def test_the_same_refusal_on_first_contact_is_the_setting_at_once(backoffs):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    api = Api(settings(url, retries=-1))  # retried, it would never end
    try:
        with pytest.raises(SettingError) as raised:
            api.entity(OBJECT)
    finally:
        api.close()
    assert str(raised.value) == (
        f"METADATA_URL={url} refused the connection (set in the environment)"
    )
    assert backoffs == []  # at once: never retried


def untrusted() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    return error


def connect_error(cause: BaseException) -> http1.ConnectError:
    error = http1.ConnectError(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            connect_error(socket.gaierror(-2, "Name or service not known")),
            "names a host that cannot be found (nosuch.example)",
        ),
        (
            connect_error(untrusted()),
            "presents a TLS certificate this machine does not trust (self-signed certificate)",
        ),
        (http1.ConnectTimeout("timed out"), "did not accept a connection within 30 s"),
        (
            http1.RemoteDisconnected("the server closed the connection without answering"),
            "did not answer as an HTTP server (is it https://?)",
        ),
        (connect_error(OSError(113, "No route to host")), "cannot be reached (No route to host)"),
        (TimeoutError("timed out"), None),  # a read that timed out may heal: retried
        (ConnectionResetError(104, "reset"), None),
    ],
)
def test_first_contact_failures(error, said):
    assert first_contact_problem(error, "nosuch.example", 30.0) == said


def jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_token_scopes_of_jwts_and_opaque_tokens():
    assert token_scopes(jwt({"context": {"scope": ["PROGRAMDATA-A.READ"]}})) == [
        "PROGRAMDATA-A.READ"
    ]
    assert token_scopes(jwt({"scope": "openid PROGRAMDATA-B.READ"})) == [
        "openid",
        "PROGRAMDATA-B.READ",
    ]
    assert token_scopes("an-opaque-api-key") is None
    assert token_scopes("a.b.c") is None


def refused(scope: str | None, message: str) -> AuthError:
    error = AuthError(f"object x: permission denied: {message}")
    error.status, error.scope = 403, scope
    return error


def test_refusals_are_summed_up_per_scope_with_the_tokens_scopes():
    need = "Token missing required scope PROGRAMDATA-DEMO.READ to download f"
    token = jwt({"scope": "PROGRAMDATA-OTHER.READ"})
    lines = refusal_summary([(refused("PROGRAMDATA-DEMO.READ", need), "DEMO")] * 3, token)
    assert lines == [
        "3 files need scope PROGRAMDATA-DEMO.READ, which this token (scopes: "
        "PROGRAMDATA-OTHER.READ) does not have: ask for access to program DEMO (on ICGC "
        "ARGO: DACO approval, https://daco.icgc-argo.org), then use a token with that scope "
        "(accessToken / ACCESSTOKEN)"
    ]


def test_the_originals_refusal_without_a_scope_is_summed_up_per_study():
    said = "Token missing required scope to download controlled-access file"
    lines = refusal_summary([(refused(None, said), "PACA-CA")] * 2, "opaque")
    assert lines == [
        f"2 files of program PACA-CA were refused ({said}): ask for access to program "
        "PACA-CA (on ICGC ARGO: DACO approval, https://daco.icgc-argo.org)"
    ]
