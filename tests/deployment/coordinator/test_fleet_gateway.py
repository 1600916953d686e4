"""The Fleet gateway's limits, on a real gateway process (uvicorn, the consortium's TLS certificate) on 127.0.0.1.

Bodies are sized by their signer before they are read, and then streamed:
8 concurrent unauthenticated 50 MB bodies (unsigned, or signed by a key of no active site) leave the gateway's peak
memory under twice its idle memory. The upstream
is a small TLS echo server standing in for the SuperLink (the real SuperLink behind the gateway is exercised by
tests/e2e/test_deployment.py); its ``pull-messages`` answers no message until the test queues one for a node.

A pull that finds no message is held for the hold time and answered empty after one ask upstream; a push notice for
its node (sent as the ServerApp sends it) makes the gateway ask again with the same signed request and answer with the
message at once; a notice for another node does not.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.proto.fleet_pb2 import PullMessagesRequest, PullMessagesResponse, PushMessagesResponse
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.proto.node_pb2 import Node
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, sign_message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fedfusion.coordinator.push_notice import push_notifier
from fedfusion.coordinator.reply_notice import ReplyNotices
from fedfusion.deployment.coordinator.fleet_gateway import DEFAULT_MAX_BODY_MB, DEFAULT_MAX_CONNECTIONS_PER_CLIENT
from fedfusion.deployment.coordinator.loopback_tls import make_loopback_tls
from fedfusion.flower_compat import FLEET_AUTH_HEADERS, FLEET_PULL_MESSAGES_PATH, FLEET_PUSH_MESSAGES_PATH
from fedfusion.protocol import PUSH_NOTICE_SOCKET_ENV
from fedfusion.provisioning.consortium import init_consortium
from fedfusion.provisioning.site_keys import SITE_PRIVATE_KEY_FILE

MB = 1024 * 1024
PUSH = "/v1/fleet/push-object"
GATEWAY = """
import sys
from pathlib import Path
from fedfusion.deployment.coordinator.fleet_gateway import GatewayLimits, gateway_server
consortium = Path(sys.argv[1])
gateway_server(sys.argv[2], Path(sys.argv[3]), "127.0.0.1", int(sys.argv[4]),
               consortium / "coordinator" / "superlink.crt", consortium / "coordinator" / "superlink.key",
               consortium, GatewayLimits(pull_hold_s=float(sys.argv[6])), Path(sys.argv[5]), Path(sys.argv[7])).run()
"""
REPLY_OBJECTS = ("message-object", "content-object")
"""The objects the stand-in SuperLink asks a site to upload after its reply."""
HOLD_S = 3.0
"""The test gateway's hold: long enough that a loaded machine still sends the notice within it."""


@dataclass
class StandInPulls:
    """The stand-in SuperLink's ``pull-messages``: each ask (node, body, signature header), and the nodes that have
    a message waiting (answered once, then forgotten)."""

    asks: list[tuple[int, bytes, str]]
    waiting: set[int]


@dataclass
class Gateway:
    """The gateway process, its address and the CA that verifies it, and a site's key."""

    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    site_key: ec.EllipticCurvePrivateKey
    notice_socket: Path
    pulls: StandInPulls
    reply_dir: Path

    def memory_kb(self, field: str) -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of the gateway process."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith(f"{field}:")).split()[1])

    def client(self) -> httpx.Client:
        """An HTTPS client that trusts the consortium CA."""
        return httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=str(self.ca_file), timeout=60)

    def tls_socket(self) -> ssl.SSLSocket:
        """A raw TLS connection to the gateway."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=30),
                                   server_hostname="127.0.0.1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signed_headers(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The headers a SuperNode holding ``key`` sends with a Fleet call (Flower's signed timestamp)."""
    key_header, time_header, signature_header = FLEET_AUTH_HEADERS
    timestamp = datetime.now(UTC).isoformat()
    return {key_header: base64.b64encode(public_key_to_bytes(key.public_key())).decode("ascii"),
            time_header: timestamp,
            signature_header: base64.b64encode(sign_message(key, timestamp.encode("ascii"))).decode("ascii")}


def _echo_upstream(tmp: Path, pulls: StandInPulls) -> tuple[uvicorn.Server, threading.Thread, str, Path]:
    async def pull(request: Request) -> Response:
        body = await request.body()
        node_id = PullMessagesRequest.FromString(body).node.node_id
        pulls.asks.append((node_id, body, request.headers[FLEET_AUTH_HEADERS[2]]))
        answer = PullMessagesResponse()
        if node_id in pulls.waiting:
            pulls.waiting.discard(node_id)
            answer.messages_list.append(ProtoMessage())
        return Response(answer.SerializeToString(), media_type="application/protobuf")

    async def push_reply(request: Request) -> Response:
        await request.body()
        answer = PushMessagesResponse(objects_to_push=list(REPLY_OBJECTS))
        return Response(answer.SerializeToString(), media_type="application/protobuf")

    async def echo(request: Request) -> PlainTextResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return PlainTextResponse(f"{size} {digest.hexdigest()}")

    tls = make_loopback_tls(tmp / "loopback")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(
        Starlette(routes=[Route(FLEET_PULL_MESSAGES_PATH, pull, methods=["POST"]),
                          Route(FLEET_PUSH_MESSAGES_PATH, push_reply, methods=["POST"]),
                          Route("/{path:path}", echo, methods=["GET", "POST"])]), host="127.0.0.1", port=port,
        ssl_certfile=str(tls.cert_file), ssl_keyfile=str(tls.key_file), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, f"https://127.0.0.1:{port}", tls.ca_file


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    consortium = tmp / "consortium"
    init_consortium(consortium, "coordinator", ["127.0.0.1"], ["site-a"])
    key = serialization.load_ssh_private_key(
        (consortium / "sites" / "site-a" / SITE_PRIVATE_KEY_FILE).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pulls = StandInPulls([], set())
    upstream, upstream_thread, upstream_url, upstream_ca = _echo_upstream(tmp, pulls)
    port = _free_port()
    notice_socket, reply_dir = tmp / "push-notice.sock", tmp / "reply-notices"
    process = subprocess.Popen([sys.executable, "-c", GATEWAY, str(consortium), upstream_url, str(upstream_ca),
                                str(port), str(notice_socket), str(HOLD_S), str(reply_dir)])
    gateway = Gateway(process, port, consortium / "ca" / "ca.crt", key, notice_socket, pulls, reply_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the gateway exited at start"
            try:
                with gateway.client() as client:
                    if client.get("/health").status_code == 200:
                        break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not serve within 60 s"
                time.sleep(0.2)
        yield gateway
    finally:
        process.terminate()
        process.wait(timeout=20)
        upstream.should_exit = True
        upstream_thread.join(timeout=10)


def _flood(gateway: Gateway, headers: dict[str, str], size: int) -> tuple[str, int]:
    """Send a POST claiming ``size`` body bytes: its head and 1 MiB, then (the answer read, which must come before the
    rest is sent) the rest as fast as the gateway takes it, until it drops the connection. The status line and bytes
    sent."""
    chunk = b"\0" * MB
    lines = [f"POST {PUSH} HTTP/1.1", "host: 127.0.0.1", f"content-length: {size}",
             "content-type: application/protobuf", *(f"{k}: {v}" for k, v in headers.items())]
    with gateway.tls_socket() as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + chunk)
        status = sock.recv(4096).split(b"\r\n", 1)[0].decode("ascii")
        sent = MB
        try:
            while sent < size:
                sent += sock.send(chunk)
        except OSError:
            pass
    return status, sent


def test_unauthenticated_bodies_are_refused_unread_and_memory_stays_bounded(gateway: Gateway) -> None:
    with gateway.client() as client:  # warm every path once before measuring idle memory
        assert client.post(PUSH, content=b"x" * MB, headers=signed_headers(gateway.site_key)).status_code == 200
        assert client.post(PUSH, content=b"x").status_code == 401
    time.sleep(0.5)
    Path(f"/proc/{gateway.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    idle = gateway.memory_kb("VmRSS")
    stranger = ec.generate_private_key(ec.SECP384R1())  # a valid signature, by a key the registry does not hold
    attempts = [{}, signed_headers(stranger)] * 4
    results: list[tuple[str, int]] = []
    threads = [threading.Thread(target=lambda h=headers: results.append(_flood(gateway, h, 50 * MB)))
               for headers in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    peak = gateway.memory_kb("VmHWM")
    print(f"gateway idle {idle / 1024:.0f} MiB, peak under 8 x 50 MB unauthenticated {peak / 1024:.0f} MiB; "
          f"MiB taken per connection (refused after the first): {[sent // MB for _, sent in results]}")
    assert len(results) == 8
    assert sorted(status for status, _ in results) == ["HTTP/1.1 401 Unauthorized"] * 4 + [
        "HTTP/1.1 413 Request Entity Too Large"] * 4, results  # unsigned; signed by a key of no active site
    assert peak < 2 * idle
    with gateway.client() as client:
        assert client.get("/health").status_code == 200
        # a small request of another key still reaches the SuperLink (which answers Flower's "Failed to activate")
        assert client.post("/v1/fleet/activate-node", content=b"k" * 600,
                           headers=signed_headers(stranger)).status_code == 200


def test_a_sites_body_is_streamed_and_an_oversized_one_refused_before_reading(gateway: Gateway) -> None:
    body = bytes(range(256)) * (24 * MB // 256)
    Path(f"/proc/{gateway.process.pid}/clear_refs").write_text("5")
    idle = gateway.memory_kb("VmRSS")
    with gateway.client() as client:
        answer = client.post(PUSH, content=body, headers=signed_headers(gateway.site_key))
        assert answer.status_code == 200 and answer.text == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
        assert gateway.memory_kb("VmHWM") - idle < 16 * 1024, "the gateway held a forwarded body"
    status, _ = _flood(gateway, signed_headers(gateway.site_key), (DEFAULT_MAX_BODY_MB + 1) * MB)
    assert status.startswith("HTTP/1.1 413 ")


def test_connections_per_client_address_are_limited(gateway: Gateway) -> None:
    held = [gateway.tls_socket() for _ in range(DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    try:
        for sock in held:  # each one served (so counted) before the next
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        with gateway.tls_socket() as extra:
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"connections from this address" in answer
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the closed connections are released: a new client is served again
        with gateway.client() as client:
            if client.get("/health").status_code == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _pull(gateway: Gateway, node_id: int) -> tuple[float, PullMessagesResponse]:
    """A SuperNode's ``pull-messages`` through the gateway: seconds until answered, and the answer."""
    body = PullMessagesRequest(node=Node(node_id=node_id)).SerializeToString()
    with gateway.client() as client:
        start = time.monotonic()
        answer = client.post(FLEET_PULL_MESSAGES_PATH, content=body,
                             headers={**signed_headers(gateway.site_key), "content-type": "application/protobuf"})
        elapsed = time.monotonic() - start
    assert answer.status_code == 200, answer.text
    return elapsed, PullMessagesResponse.FromString(answer.content)


def test_a_pull_that_finds_no_message_is_held_until_its_nodes_push_notice(gateway: Gateway) -> None:
    asks = gateway.pulls.asks
    asks.clear()
    elapsed, answer = _pull(gateway, 7)  # no message, no notice: held, asked upstream once
    assert not answer.messages_list and len(asks) == 1
    assert HOLD_S * 0.9 <= elapsed < HOLD_S + 30
    asks.clear()
    results: list[tuple[float, PullMessagesResponse]] = []
    puller = threading.Thread(target=lambda: results.append(_pull(gateway, 7)))
    puller.start()
    deadline = time.monotonic() + 30
    while not asks:
        assert time.monotonic() < deadline, "the pull did not reach the stand-in SuperLink"
        time.sleep(0.01)
    notify = push_notifier({PUSH_NOTICE_SOCKET_ENV: str(gateway.notice_socket)})
    notify([8])  # another node's notice: not asked again
    time.sleep(0.3)
    assert len(asks) == 1
    gateway.pulls.waiting.add(7)
    notified = time.monotonic()
    notify([7])
    puller.join(timeout=60)
    answered_after = time.monotonic() - notified
    (_, answer), = results
    print(f"held pull answered {answered_after * 1000:.0f} ms after its notice (hold {HOLD_S} s)")
    assert len(answer.messages_list) == 1, "the notice did not end the hold: the hold ran out, answered empty"
    assert len(asks) == 2 and asks[0] == asks[1], "the re-forwarded request is not the SuperNode's signed one"


def test_a_reply_is_announced_to_the_serverapps_once_its_last_object_is_uploaded(gateway: Gateway) -> None:
    notices = ReplyNotices(gateway.reply_dir)  # a running ServerApp's socket
    try:
        headers = {**signed_headers(gateway.site_key), "content-type": "application/protobuf"}
        with gateway.client() as client:
            assert client.post(PUSH, content=b"an object", headers=headers).status_code == 200
            assert not notices.wait(0.3), "an object's upload with no reply announced was taken for a reply"
            answer = client.post(FLEET_PUSH_MESSAGES_PATH, content=b"a reply", headers=headers)
            assert answer.status_code == 200
            assert list(PushMessagesResponse.FromString(answer.content).objects_to_push) == list(REPLY_OBJECTS)
            assert not notices.wait(0.3), "announced before its objects were uploaded"
            for uploaded, _ in enumerate(REPLY_OBJECTS, start=1):
                assert client.post(PUSH, content=b"object", headers=headers).status_code == 200
                if uploaded < len(REPLY_OBJECTS):
                    assert not notices.wait(0.3), f"announced after {uploaded} of {len(REPLY_OBJECTS)} objects"
        assert notices.wait(10.0), "the reply is whole at the SuperLink and the ServerApp was not told"
    finally:
        notices.close()
