"""The coordinator's public face: an HTTPS reverse proxy that forwards only the Fleet API to the SuperLink.

Flower 1.41's SuperLink serves the Fleet API (``/v1/fleet/*``, what SuperNodes call), the Control API
(``/v1/control/*``: register a SuperNode, start or stop a run, read its logs) and the Runtime API
(``/v1/runtime/*``) on one HTTP port, and its open-source Control API has no credential. So the SuperLink is
bound to 127.0.0.1 only, and this gateway, with the consortium-signed TLS certificate, is the only thing the
network reaches. It forwards the Fleet methods a SuperNode needs, bytes and headers unchanged, plus ``GET /health``;
every other path, including the Fleet's own ``register-node``/``unregister-node`` (self-registration), is answered
403 here. A request the SuperLink does not answer is answered 502, which a SuperNode retries.
The operator registers sites and submits studies on the coordinator host, over loopback.
Flower's paths (the Fleet API prefix and methods, ``/health``) come from ``fedfusion.flower_compat``.

Bounded resources (``GatewayLimits``): a POST's signed-timestamp headers are checked before its body is read
(``fleet_admission.py``): without a valid SuperNode signature it is answered 401; it needs a ``Content-Length``
(else 411) of at most ``max_body_bytes`` for an active site key of the registry, 64 KiB for any other key (else
413); the body is then streamed to the SuperLink, never held whole, and answers stream back the same way. A client
address holds at most ``max_connections_per_client`` connections at once; one more is answered 503 (which a
SuperNode retries) and closed.

Held pulls (``held_pulls.py``): given the ServerApp's push-notice socket, the gateway reads a ``pull-messages``
request's small body whole and, while the SuperLink answers it with no message, holds it (up to
``GatewayLimits.pull_hold_s``) and forwards the same bytes again as soon as a notice names the request's node.
The SuperLink checks the re-forwarded request as the first (its signed timestamp is still within Flower's window).

Reply notices (``reply_broadcast.py``): given the ServerApps' reply-notice folder, the gateway reads a
``push-messages`` answer whole (small: the ids of the objects to upload) and tells every ServerApp to pull once the
site has uploaded the last of those objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from fedfusion.deployment.coordinator.fleet_admission import SiteKeys, request_signer
from fedfusion.deployment.coordinator.held_pulls import PULL_HOLD_S, PushNotices
from fedfusion.deployment.coordinator.reply_broadcast import ReplyBroadcast
from fedfusion.flower_compat import (
    FLEET_API_PREFIX,
    FLEET_AUTH_HEADERS,
    FLEET_METHODS,
    FLEET_PULL_MESSAGES_PATH,
    FLEET_PUSH_MESSAGES_PATH,
    FLEET_PUSH_OBJECT_PATH,
    SUPERLINK_HEALTH_PATH,
    is_empty_pull_response,
    objects_to_push_count,
    pull_request_node_id,
)

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({f"{FLEET_API_PREFIX}{method}" for method in FLEET_METHODS})
"""The Fleet API methods a registered SuperNode calls (``register-node``/``unregister-node`` left out on purpose)."""
HEALTH_PATH = SUPERLINK_HEALTH_PATH
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                         "transfer-encoding", "upgrade", "host"})
UPSTREAM_TIMEOUT_S = 120.0
UPSTREAM_KEEPALIVE_S = 1.0
"""Idle upstream connections are dropped well before the SuperLink's uvicorn closes them (after 5 s): reusing one
it is closing loses the request ("Server disconnected without sending a response"), which a SuperNode may not
retry (a train message lost until the round times out)."""
MIB = 1024 * 1024
DEFAULT_MAX_BODY_MB = 32
"""Flower 1.41 cuts arrays into chunks of 5 MiB (``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``): a SuperNode's largest
request is one such chunk, so 32 MiB leaves a wide margin."""
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 16
"""A SuperNode holds a handful of connections (up to 2 object pushes and 2 pulls at a time, its heartbeat, its
message loop); 16 leaves room for a few sites behind one address."""
UNKNOWN_KEY_MAX_BODY_BYTES = 64 * 1024
"""A validly signed request from a key that is not an active site key is still forwarded, so the SuperLink answers
it as Flower does (an unregistered SuperNode's ``activate-node``: "Failed to activate SuperNode", exit 305), but
only with a small body (``activate-node`` carries the public key and a number)."""
CLOSE_GRACE_S = 1.0
"""After an answer that closes its connection, the client has this long to read it before the connection is dropped.
A TLS close otherwise waits up to 30 s for the client's close, decrypting (and discarding) all it still sends."""
_CLOSE = {"connection": "close"}
_REPLY_PATHS = frozenset({FLEET_PUSH_MESSAGES_PATH, FLEET_PUSH_OBJECT_PATH})
"""A site's reply to the coordinator: announced, then its objects uploaded (followed with reply notices)."""


@dataclass(frozen=True)
class GatewayLimits:
    """What one client may make the gateway hold."""

    max_body_bytes: int = DEFAULT_MAX_BODY_MB * MIB
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    pull_hold_s: float = PULL_HOLD_S
    """The longest a pull that finds no message is held for the ServerApp's push notice."""


def is_public(method: str, path: str) -> bool:
    """Whether the gateway forwards this request to the SuperLink."""
    return (method == "POST" and path in PUBLIC_PATHS) or (method == "GET" and path == HEALTH_PATH)


def create_gateway_app(upstream_url: str, upstream_ca_file: Path, site_keys: SiteKeys,
                       limits: GatewayLimits, notices: PushNotices | None = None,
                       replies: ReplyBroadcast | None = None) -> Starlette:
    """The proxy application forwarding public requests to ``upstream_url`` (the loopback SuperLink); with
    ``notices``, a pull that finds no message is held; with ``replies``, each reply a site hands in is announced to
    the ServerApps (see the module docstring)."""
    upstream_tls = ssl.create_default_context(cafile=str(upstream_ca_file))
    client = httpx.AsyncClient(base_url=upstream_url, verify=upstream_tls, timeout=UPSTREAM_TIMEOUT_S,
                               limits=httpx.Limits(keepalive_expiry=UPSTREAM_KEEPALIVE_S))

    async def forward(request: Request) -> Response:
        path, peer = request.url.path, request.client.host if request.client else "?"
        if not is_public(request.method, path):
            logger.warning("gateway refused %s %s from %s", request.method, path, peer)
            return PlainTextResponse("forbidden: only the Fleet API is served on this port\n", status_code=403,
                                     headers=_CLOSE)
        headers = [(k, v) for k, v in _forwarded(request.headers.items()) if k.lower() != "content-length"]
        body: AsyncIterator[bytes] | None = None
        held = False
        if request.method == "POST":
            length_or_refusal = _admitted_length(request, site_keys, limits, peer)
            if isinstance(length_or_refusal, Response):
                return length_or_refusal
            headers.append(("content-length", str(length_or_refusal)))
            body = request.stream()
            held = path == FLEET_PULL_MESSAGES_PATH and length_or_refusal <= UNKNOWN_KEY_MAX_BODY_BYTES
        try:
            if held and notices is not None:
                return await _held_pull(client, notices, limits.pull_hold_s, path, headers, await request.body())
            upstream = await client.send(client.build_request(request.method, path, content=body, headers=headers),
                                         stream=True)
            if replies is not None and upstream.status_code == 200 and path in _REPLY_PATHS:
                return await _tracked_reply(replies, upstream, path, request.headers.get(FLEET_AUTH_HEADERS[0], ""))
        except httpx.TransportError as exc:  # 502: a SuperNode retries it (Flower's retryable status codes)
            logger.warning("gateway: the SuperLink did not answer %s: %r", path, exc)
            return PlainTextResponse("bad gateway: the SuperLink did not answer\n", status_code=502)
        except ClientDisconnect:
            logger.warning("gateway: %s left during its %s request", peer, path)
            return PlainTextResponse("client disconnected\n", status_code=400, headers=_CLOSE)
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                 headers=dict(_forwarded(upstream.headers.items())),
                                 background=BackgroundTask(upstream.aclose))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        if notices is not None:
            notices.start(asyncio.get_running_loop())
        yield
        await client.aclose()
        if notices is not None:
            notices.close()
        if replies is not None:
            replies.close()

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])],
                     lifespan=lifespan)


def gateway_server(upstream_url: str, upstream_ca_file: Path, host: str, port: int, certfile: Path,
                   keyfile: Path, consortium_dir: Path, limits: GatewayLimits | None = None,
                   push_notice_socket: Path | None = None, reply_notice_dir: Path | None = None) -> uvicorn.Server:
    """A uvicorn server for the gateway with the coordinator's TLS certificate (TLS only, no plaintext); the
    registry of ``consortium_dir`` says which site keys may send a body. With ``push_notice_socket`` (bound here,
    removed when the server stops), pulls that find no message are held until the ServerApp's notice; with
    ``reply_notice_dir``, the ServerApps' sockets there are told of each reply a site hands in."""
    limits = limits or GatewayLimits()
    notices = PushNotices(push_notice_socket) if push_notice_socket is not None else None
    replies = ReplyBroadcast(reply_notice_dir) if reply_notice_dir is not None else None
    app = create_gateway_app(upstream_url, upstream_ca_file, SiteKeys(consortium_dir), limits, notices, replies)
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile),
                            log_level="warning", access_log=False, lifespan="on", ws="none",
                            http=_per_client_limited(limits.max_connections_per_client))
    return uvicorn.Server(config)


async def _tracked_reply(replies: ReplyBroadcast, upstream: httpx.Response, path: str, sender: str) -> Response:
    """The SuperLink's answer to a site's ``push-messages`` or ``push-object`` (read whole: both are small), after
    telling ``replies`` of the reply announced or the object uploaded."""
    try:
        answer = b"".join([chunk async for chunk in upstream.aiter_raw()])
    finally:
        await upstream.aclose()
    if path == FLEET_PUSH_MESSAGES_PATH:
        replies.announced(sender, None if "content-encoding" in upstream.headers else objects_to_push_count(answer))
    else:
        replies.uploaded(sender)
    return Response(answer, status_code=upstream.status_code, headers=dict(_forwarded(upstream.headers.items())))


async def _held_pull(client: httpx.AsyncClient, notices: PushNotices, hold_s: float, path: str,
                     headers: list[tuple[str, str]], body: bytes) -> Response:
    """Forward a ``pull-messages`` request; while its answer holds no message, wait for a notice naming its node
    (up to ``hold_s`` in all) and forward the same request again. The last answer goes back unchanged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hold_s
    node_id = pull_request_node_id(body)
    while True:
        seen = notices.count(node_id) if node_id is not None else 0
        upstream = await client.send(client.build_request("POST", path, content=body, headers=headers), stream=True)
        try:
            answer = b"".join([chunk async for chunk in upstream.aiter_raw()])
        finally:
            await upstream.aclose()
        left = deadline - loop.time()
        if node_id is None or left <= 0 or upstream.status_code != 200 or "content-encoding" in upstream.headers \
                or not is_empty_pull_response(answer) or not await notices.wait(node_id, seen, left):
            return Response(answer, status_code=upstream.status_code,
                            headers=dict(_forwarded(upstream.headers.items())))


def _admitted_length(request: Request, site_keys: SiteKeys, limits: GatewayLimits, peer: str) -> int | Response:
    """The body length a POST may send, or the refusal to answer before any of its body is read."""
    signer = request_signer(request.headers, site_keys)
    if signer is None:
        logger.warning("gateway refused %s from %s: no valid SuperNode signature", request.url.path, peer)
        return PlainTextResponse("unauthorized: Invalid SuperNode authentication\n", status_code=401,
                                 headers=_CLOSE)
    sender = f"site {signer.site} ({peer})" if signer.site else f"{peer} (a key that is not an active site key)"
    limit = limits.max_body_bytes if signer.site else UNKNOWN_KEY_MAX_BODY_BYTES
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        logger.warning("gateway refused %s from %s: no Content-Length", request.url.path, sender)
        return PlainTextResponse("length required: a request body needs a Content-Length\n", status_code=411,
                                 headers=_CLOSE)
    if int(declared) > limit:
        logger.warning("gateway refused %s from %s: body of %s bytes, over the limit of %d", request.url.path,
                       sender, declared, limit)
        return PlainTextResponse(f"payload too large: {declared} bytes, the gateway's limit is {limit} bytes\n",
                                 status_code=413, headers=_CLOSE)
    return int(declared)


def _per_client_limited(limit: int) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, refusing a client address's connection beyond ``limit`` open ones."""
    open_connections: Counter[str] = Counter()
    text = f"service unavailable: more than {limit} connections from this address\n".encode("ascii")
    refusal = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(text), text))

    class PerClientLimitedProtocol(H11Protocol):
        _client_host: str | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
            if open_connections[host] >= limit:
                logger.warning("gateway refused a connection from %s: %d open, the limit per client", host, limit)
                self._refused = True
                transport.write(refusal)
                transport.close()
                return
            open_connections[host] += 1
            self._client_host = host
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def on_response_complete(self) -> None:
            if self.transport.is_closing():  # a refusal with "connection: close", or an error: drop the rest
                self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            if self._client_host is not None:
                open_connections[self._client_host] -= 1
                if open_connections[self._client_host] <= 0:
                    del open_connections[self._client_host]
                self._client_host = None
            super().connection_lost(exc)

    return PerClientLimitedProtocol


def _forwarded(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
