"""The live dashboard: an ASGI app fed over Server-Sent Events from a run's event log.

``create_app`` builds it (``app.py``), ``serve_in_background`` serves it next to a run or on
its own (``server.py``). The page (``static/``) is hand-written HTML, CSS and JavaScript that
ship in the package: nothing is fetched from the internet.
"""

from __future__ import annotations

from maos.web.app import create_app, create_metrics_app
from maos.web.auth import TOKEN_ENV, InsecureBind, check_bind, is_loopback
from maos.web.server import RunningServer, ServerError, serve_in_background

__all__ = [
    "TOKEN_ENV",
    "InsecureBind",
    "RunningServer",
    "ServerError",
    "check_bind",
    "create_app",
    "create_metrics_app",
    "is_loopback",
    "serve_in_background",
]
