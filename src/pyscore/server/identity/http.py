"""The few HTTP calls identity needs (discovery, keys, introspection), and the event sinks'
(webhooks, Maestro), made with the standard library: the server loads no HTTP client
library, and these calls are rare (keys are cached, introspection answers too)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from pyscore.server.identity.errors import Unavailable

TIMEOUT = 5.0
MAX_BODY = 1024 * 1024  # no provider's keys or answers come near this


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # an identity provider answers where it is configured, or not at all


_opener = urllib.request.build_opener(_NoRedirects)


def request(
    url: str,
    form: Optional[dict[str, str]] = None,
    params: Optional[dict[str, str]] = None,
    auth: Optional[tuple[str, str]] = None,
    timeout: float = TIMEOUT,
    method: Optional[str] = None,
    body: Optional[bytes] = None,
    headers: Optional[dict[str, str]] = None,
) -> tuple[int, bytes]:
    """(status, body) of a GET, or of a form POST when `form` is given (None: no body, but
    still a POST when `params` only); or of `method` with `body` and `headers` as given.
    Network failures raise Unavailable; HTTP errors are answers, returned with their status."""
    if params:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
    data = urllib.parse.urlencode(form).encode() if form is not None else body
    method = method or ("POST" if form is not None or params else "GET")
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with _opener.open(req, timeout=timeout) as response:
            return response.status, response.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(MAX_BODY)
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
        raise Unavailable(f"cannot reach {url.split('?')[0]}: {exc}") from None


def get_json(url: str, what: str) -> dict[str, Any]:
    status, body = request(url)
    if status != 200:
        raise Unavailable(f"{what} at {url} answered {status}")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise Unavailable(f"{what} at {url} is not JSON") from None
    if not isinstance(parsed, dict):
        raise Unavailable(f"{what} at {url} is not a JSON object")
    return parsed
