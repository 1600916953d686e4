"""The coordinator's public face: an HTTPS reverse proxy that forwards only the Fleet API to the SuperLink.

Flower 1.41's SuperLink serves the Fleet API (``/v1/fleet/*``, what SuperNodes call), the Control API
(``/v1/control/*``: register a SuperNode, start or stop a run, read its logs) and the Runtime API
(``/v1/runtime/*``) on one HTTP port, and its open-source Control API has no credential. So the SuperLink is
bound to 127.0.0.1 only, and this gateway, with the consortium-signed TLS certificate, is the only thing the
network reaches. It forwards the Fleet methods a SuperNode needs, bytes and headers unchanged (the SuperNode's
signed-timestamp authentication headers are checked by the SuperLink itself), plus ``GET /health``; every other
path, including the Fleet's own ``register-node``/``unregister-node`` (self-registration), is answered 403 here.
A request the SuperLink does not answer is answered 502, which a SuperNode retries.
The operator registers sites and submits studies on the coordinator host, over loopback.
Flower's paths (the Fleet API prefix and methods, ``/health``) come from ``fedfusion.flower_compat``.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fedfusion.flower_compat import FLEET_API_PREFIX, FLEET_METHODS, SUPERLINK_HEALTH_PATH

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({f"{FLEET_API_PREFIX}{method}" for method in FLEET_METHODS})
"""The Fleet API methods a registered SuperNode calls (``register-node``/``unregister-node`` left out on purpose)."""
HEALTH_PATH = SUPERLINK_HEALTH_PATH
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                         "transfer-encoding", "upgrade", "host", "content-length"})
UPSTREAM_TIMEOUT_S = 120.0
UPSTREAM_KEEPALIVE_S = 1.0
"""Idle upstream connections are dropped well before the SuperLink's uvicorn closes them (after 5 s): reusing one
it is closing loses the request ("Server disconnected without sending a response"), which a SuperNode may not
retry (a train message lost until the round times out)."""


def is_public(method: str, path: str) -> bool:
    """Whether the gateway forwards this request to the SuperLink."""
    return (method == "POST" and path in PUBLIC_PATHS) or (method == "GET" and path == HEALTH_PATH)


def create_gateway_app(upstream_url: str, upstream_ca_file: Path) -> Starlette:
    """The proxy application forwarding public requests to ``upstream_url`` (the loopback SuperLink)."""
    upstream_tls = ssl.create_default_context(cafile=str(upstream_ca_file))
    client = httpx.AsyncClient(base_url=upstream_url, verify=upstream_tls, timeout=UPSTREAM_TIMEOUT_S,
                               limits=httpx.Limits(keepalive_expiry=UPSTREAM_KEEPALIVE_S))

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not is_public(request.method, path):
            logger.warning("gateway refused %s %s from %s", request.method, path,
                           request.client.host if request.client else "?")
            return PlainTextResponse("forbidden: only the Fleet API is served on this port\n", status_code=403)
        try:
            upstream = await client.request(request.method, path, content=await request.body(),
                                            headers=_forwarded(request.headers.items()))
        except httpx.TransportError as exc:  # 502: a SuperNode retries it (Flower's retryable status codes)
            logger.warning("gateway: the SuperLink did not answer %s: %r", path, exc)
            return PlainTextResponse("bad gateway: the SuperLink did not answer\n", status_code=502)
        headers = [(k, v) for k, v in _forwarded(upstream.headers.items()) if k.lower() != "content-encoding"]
        return Response(upstream.content, status_code=upstream.status_code, headers=dict(headers))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])],
                     lifespan=lifespan)


def gateway_server(upstream_url: str, upstream_ca_file: Path, host: str, port: int, certfile: Path,
                   keyfile: Path) -> uvicorn.Server:
    """A uvicorn server for the gateway with the coordinator's TLS certificate (TLS only, no plaintext)."""
    config = uvicorn.Config(create_gateway_app(upstream_url, upstream_ca_file), host=host, port=port,
                            ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), log_level="warning",
                            access_log=False, lifespan="on", ws="none")
    return uvicorn.Server(config)


def _forwarded(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
