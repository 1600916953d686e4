"""Flower's SuperLink middleware, each layer run only for the API whose requests it acts on.

Flower 1.41's SuperLink serves its Control, Fleet and Runtime APIs from one FastAPI app whose every request passes
through nine ``BaseHTTPMiddleware`` layers, each of which acts on one API only and passes every other request on
unchanged (the Control API's authentication, licence check, event log and no-cache headers; the Fleet's node
authentication and event log; the Runtime's tracing). A pass-through layer still costs the SuperLink a task group
and two memory streams per request. The SuperLink is one Python process that every request of a round goes through
(docs/OPERATOR_GUIDE.md, "What a round costs"), so `PathScopedMiddleware` sends a request outside a layer's API
past that layer, and the layer runs, unchanged, for every request of its own API. Which API each of Flower's layers
acts on comes from ``fedfusion.flower_compat.superlink_middleware_scopes`` (read from each layer's own test of the
request path); a layer not listed there runs for every request, as in Flower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from fedfusion import flower_compat


class PathScopedMiddleware:
    """The ASGI layer `middleware`, run only for HTTP requests whose path starts with one of `prefixes` (and for
    non-HTTP events such as the lifespan); any other HTTP request goes straight to the app inside."""

    def __init__(self, app: ASGIApp, middleware: Middleware, prefixes: tuple[str, ...]) -> None:
        if not prefixes:
            raise ValueError(f"{middleware!r} needs at least one path prefix to be scoped to")
        self._app = app
        self._layer: ASGIApp = middleware.cls(app, *middleware.args, **middleware.kwargs)
        self._prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through the layer when its path is in scope, else straight to the app inside."""
        if scope["type"] == "http" and not str(scope["path"]).startswith(self._prefixes):
            await self._app(scope, receive, send)
        else:
            await self._layer(scope, receive, send)


def install() -> None:
    """Make the SuperLink this process starts build its app with Flower's middleware scoped to their APIs."""
    flower_compat.replace_superlink_middleware(
        lambda stack: scoped_middleware(stack, flower_compat.superlink_middleware_scopes()))


def scoped_middleware(stack: Sequence[Middleware], scopes: Mapping[type, tuple[str, ...]]) -> list[Middleware]:
    """`stack` (outermost first) with every layer whose class `scopes` names run only for its paths, in the same
    order; every other layer as it was."""
    return [Middleware(PathScopedMiddleware, middleware=layer, prefixes=scopes[layer.cls])
            if isinstance(layer.cls, type) and layer.cls in scopes else layer
            for layer in stack]
