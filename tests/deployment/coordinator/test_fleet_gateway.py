"""The Fleet gateway's limits, on a real gateway process (uvicorn, the consortium's TLS certificate) on 127.0.0.1.

Bodies are sized by their signer before they are read, and then streamed:
8 concurrent unauthenticated 50 MB bodies (unsigned, or signed by a key of no active site) leave the gateway's peak
memory under twice its idle memory. The upstream
is a small TLS echo server standing in for the SuperLink (the real SuperLink behind the gateway is exercised by
tests/e2e/test_deployment.py).
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
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, sign_message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from fedfusion.deployment.coordinator.fleet_gateway import DEFAULT_MAX_BODY_MB, DEFAULT_MAX_CONNECTIONS_PER_CLIENT
from fedfusion.deployment.coordinator.loopback_tls import make_loopback_tls
from fedfusion.flower_compat import FLEET_AUTH_HEADERS
from fedfusion.provisioning.consortium import init_consortium
from fedfusion.provisioning.site_keys import SITE_PRIVATE_KEY_FILE

MB = 1024 * 1024
PUSH = "/v1/fleet/push-object"
GATEWAY = """
import sys
from pathlib import Path
from fedfusion.deployment.coordinator.fleet_gateway import gateway_server
consortium = Path(sys.argv[1])
gateway_server(sys.argv[2], Path(sys.argv[3]), "127.0.0.1", int(sys.argv[4]),
               consortium / "coordinator" / "superlink.crt", consortium / "coordinator" / "superlink.key",
               consortium).run()
"""


@dataclass
class Gateway:
    """The gateway process, its address and the CA that verifies it, and a site's key."""

    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    site_key: ec.EllipticCurvePrivateKey

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


def _echo_upstream(tmp: Path) -> tuple[uvicorn.Server, threading.Thread, str, Path]:
    async def echo(request: Request) -> PlainTextResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return PlainTextResponse(f"{size} {digest.hexdigest()}")

    tls = make_loopback_tls(tmp / "loopback")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(
        Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])]), host="127.0.0.1", port=port,
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
    upstream, upstream_thread, upstream_url, upstream_ca = _echo_upstream(tmp)
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", GATEWAY, str(consortium), upstream_url, str(upstream_ca),
                                str(port)])
    gateway = Gateway(process, port, consortium / "ca" / "ca.crt", key)
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
