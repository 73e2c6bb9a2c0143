"""Who may talk to the dashboard: loopback needs nothing, any other address needs a token.

The token comes from ``MAOS_DASHBOARD_TOKEN``. A request proves it knows it in one of three
ways, checked in this order with a constant-time comparison:

- ``Authorization: Bearer <token>`` (scripts, Prometheus' ``authorization`` block);
- ``?token=<token>`` in the URL (the first page load in a browser; ``EventSource`` cannot set
  headers). A page loaded this way gets the token back as an ``HttpOnly``, ``SameSite=Strict``
  cookie, so the page's own requests (its script, style sheet, API calls and event stream)
  need no token in their URLs;
- that cookie (which holds a digest of the token, never the token itself).

Anything else gets ``401`` with a JSON body and a ``WWW-Authenticate: Bearer`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from http.cookies import SimpleCookie

from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maos.errors import MaosError

TOKEN_ENV = "MAOS_DASHBOARD_TOKEN"
COOKIE_NAME = "maos_dashboard_token"


class InsecureBind(MaosError):
    """The dashboard was asked to listen beyond loopback without a token."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Raise ``InsecureBind`` unless ``host`` is loopback or a token is set."""
    if not token and not is_loopback(host):
        raise InsecureBind(
            f"refusing to serve on {host}: it is not a loopback address, so the dashboard needs a "
            f"token; set {TOKEN_ENV} (for example: export {TOKEN_ENV}=$(openssl rand -hex 16)) "
            "or bind to 127.0.0.1"
        )


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``token`` (header, query or cookie)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("TokenMiddleware needs a non-empty token")
        self.app = app
        self.token = token
        self.cookie_value = hmac.new(token.encode(), b"maos-dashboard-cookie", hashlib.sha256).hexdigest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(credentials.strip(), self.token):
            await self.app(scope, receive, send)
            return
        query = QueryParams(scope.get("query_string", b""))
        if _same(query.get("token"), self.token):
            await self.app(scope, receive, self._set_cookie(send))
            return
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except ValueError:  # http.cookies.CookieError: a malformed header counts as none
            cookie = SimpleCookie()
        morsel = cookie.get(COOKIE_NAME)
        if _same(morsel.value if morsel is not None else None, self.cookie_value):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "unauthorized", "detail": f"this dashboard needs its token ({TOKEN_ENV})"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="maos"'},
        )
        await response(scope, receive, send)

    def _set_cookie(self, send: Send) -> Send:
        cookie = f"{COOKIE_NAME}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return send_with_cookie
