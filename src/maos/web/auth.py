"""Who may talk to the dashboard, and what the browser may do with its answers.

Host names
----------
Every request's ``Host`` header must name an allowed host (``HostMiddleware``): by default the
loopback names ``localhost``, ``127.0.0.1`` and ``[::1]`` (any port), plus the address the
server listens on when that is not a wildcard; more with ``--allowed-host NAME`` or
``MAOS_DASHBOARD_HOSTS`` (comma separated; ``*`` allows any). Anything else gets ``421`` with a
JSON body. This defeats DNS rebinding: a page on ``attacker.example`` whose name is made to
resolve to 127.0.0.1 sends ``Host: attacker.example`` and reads nothing.

Response headers
----------------
Every answer carries ``SECURITY_HEADERS``: a strict Content-Security-Policy (only this
server's own script, style, images and connections; no inline script or style, no framing,
no forms, no plugins), ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
no-referrer``.

The token
---------
Loopback needs nothing, any other address needs a token.

The token comes from ``MAOS_DASHBOARD_TOKEN``. A request proves it knows it in one of three
ways, checked in this order with a constant-time comparison:

- ``Authorization: Bearer <token>`` (scripts, Prometheus' ``authorization`` block);
- ``?token=<token>`` in the URL: the first visit in a browser. ``GET /?token=…`` is answered
  with ``303 See Other`` to the same address without the token, setting an ``HttpOnly``,
  ``SameSite=Strict`` cookie, so the token leaves the address bar and the history at once and
  the page's own requests (its script, style sheet, API calls and event stream) carry only
  the cookie. No other route takes the token in its URL: scripts send the header.
- that cookie (which holds a digest of the token, never the token itself).

Anything else gets ``401`` with a JSON body and a ``WWW-Authenticate: Bearer`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maos.errors import MaosError

TOKEN_ENV = "MAOS_DASHBOARD_TOKEN"
HOSTS_ENV = "MAOS_DASHBOARD_HOSTS"
COOKIE_NAME = "maos_dashboard_token"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_HOST = "*"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


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


MIN_TOKEN_CHARS = 16
"""The shortest token taken: one a person could guess (`a`, a space) would guard nothing."""


def check_bind(host: str, token: str | None) -> None:
    """Raise ``InsecureBind`` unless ``host`` is loopback or a token is set, and when a token
    is set, unless it is ``MIN_TOKEN_CHARS`` characters or more without surrounding space."""
    if token is not None and (len(token) < MIN_TOKEN_CHARS or token != token.strip()):
        raise InsecureBind(
            f"{TOKEN_ENV} is too weak to guard the dashboard: use at least {MIN_TOKEN_CHARS} "
            f"characters, no spaces around them (for example: export {TOKEN_ENV}=$(openssl rand "
            "-hex 16)), or unset it to serve on 127.0.0.1 without one"
        )
    if not token and not is_loopback(host):
        raise InsecureBind(
            f"refusing to serve on {host}: it is not a loopback address, so the dashboard needs a "
            f"token; set {TOKEN_ENV} (for example: export {TOKEN_ENV}=$(openssl rand -hex 16)) "
            "or bind to 127.0.0.1"
        )


def _host_name(value: str) -> str:
    """``Host`` header value → lower-case name without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(bind_host: str | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names requests may use: loopback names, ``bind_host`` unless it is a
    wildcard (``0.0.0.0``, ``::``), and ``extra`` (``*``: any)."""
    names = set(LOOPBACK_HOSTS)
    if bind_host and bind_host.strip("[]") not in ("0.0.0.0", "::", ""):
        names.add(_host_name(bind_host) if not bind_host.count(":") > 1 else bind_host.strip("[]").lower())
    for item in (raw.strip() for raw in extra):
        if item:
            names.add(ANY_HOST if item == ANY_HOST else _host_name(item))
    return frozenset(names)


def hosts_from_env(env: Mapping[str, str]) -> list[str]:
    """``MAOS_DASHBOARD_HOSTS``: comma or whitespace separated host names."""
    return [item for item in re.split(r"[\s,]+", env.get(HOSTS_ENV, "")) if item]


class HostMiddleware:
    """ASGI middleware: refuse (``421``) a request whose ``Host`` is not allowed, and add
    ``SECURITY_HEADERS`` to every answer."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        host = _host_name(Headers(scope=scope).get("host", ""))
        if ANY_HOST not in self.hosts and host not in self.hosts:
            response = JSONResponse(
                {
                    "error": "misdirected_request",
                    "detail": f"host {host!r} is not one this dashboard answers to; allow it with "
                    f"--allowed-host or {HOSTS_ENV}",
                },
                status_code=421,
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``token`` (header or cookie; in the
    query of ``GET /`` only, traded there for the cookie)."""

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
        if (
            scope["path"] == "/"
            and scope["method"] in ("GET", "HEAD")
            and _same(query.get("token"), self.token)
        ):
            # the page, and only the page: trade the token for the cookie and drop it from the
            # address bar (anywhere else a URL would carry it to logs and histories)
            rest = urlencode([(k, v) for k, v in query.multi_items() if k != "token"])
            redirect = RedirectResponse(("./?" + rest) if rest else "./", status_code=303)
            await redirect(scope, receive, self._set_cookie(send))
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
