"""A real ``flower-superlink`` serves TLS with the provisioned CA, certificate and key (loopback only)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedfusion.provisioning.consortium import init_consortium
from fedfusion.provisioning.site_keys import keygen

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    # The SuperLink starts `flower-superexec` by name: the venv's scripts must be on PATH even when the venv is
    # not activated (`bash scripts/test` runs .venv/bin/python directly).
    return {**os.environ, "PATH": f"{_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(tmp_path / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a Flower daemon in its own process group (it starts a SuperExec child), output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a daemon started by :func:`_start` and its children: its process group, led by its PID."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _handshake(port: int, cafile: Path, server_hostname: str) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          context.wrap_socket(raw, server_hostname=server_hostname) as tls):
        return str(tls.version())


@pytest.fixture
def superlink(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A SuperLink with TLS and SuperNode authentication on a free 127.0.0.1 port; stopped by PID."""
    consortium = tmp_path / "consortium"
    init_consortium(consortium, "coordinator", ["127.0.0.1", "localhost"], ["site-a"])
    coordinator, port = consortium / "coordinator", _free_port()
    process = _start([str(_bin_dir() / "flower-superlink"), "--ssl-ca-certfile", str(coordinator / "ca.crt"),
                      "--ssl-certfile", str(coordinator / "superlink.crt"),
                      "--ssl-keyfile", str(coordinator / "superlink.key"), "--enable-supernode-auth",
                      "--database", str(tmp_path / "state.db"), "--host", "127.0.0.1", "--port", str(port),
                      "--disable-runtime-dependency-installation"], tmp_path / "superlink.log", _env(tmp_path))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (tmp_path / "superlink.log").read_text()
            try:
                _handshake(port, consortium / "ca" / "ca.crt", "127.0.0.1")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield consortium, port
    finally:
        _stop(process)


def test_superlink_accepts_tls_verified_by_the_consortium_ca_only(superlink: tuple[Path, int],
                                                                   tmp_path: Path) -> None:
    consortium, port = superlink
    ca_file = consortium / "ca" / "ca.crt"
    site_ca_file = consortium / "sites" / "site-a" / "ca.crt"
    assert _handshake(port, site_ca_file, "127.0.0.1").startswith("TLS")
    assert _handshake(port, ca_file, "localhost").startswith("TLS")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, ca_file, "not-in-the-certificate.example")
    other = init_consortium(tmp_path / "other", "coordinator", ["127.0.0.1"], [])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(port, tmp_path / other.consortium / "ca" / "ca.crt", "127.0.0.1")

    https = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                        context=ssl.create_default_context(cafile=str(ca_file)))
    https.request("GET", "/health")
    assert https.getresponse().status == 200
    https.close()
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/health")
        plain.getresponse()
    plain.close()


def test_registered_site_key_goes_online_and_an_unregistered_one_is_refused(superlink: tuple[Path, int],
                                                                           tmp_path: Path) -> None:
    consortium, port = superlink
    env = _env(tmp_path)
    Path(env["FLWR_HOME"]).mkdir(exist_ok=True)
    (Path(env["FLWR_HOME"]) / "config.toml").write_text(
        f'[superlink.consortium]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{consortium / "ca" / "ca.crt"}"\n')
    registered = consortium / "sites" / "site-a"
    subprocess.run([str(_bin_dir() / "flwr"), "supernode", "register", str(registered / "supernode.pub"),
                    "consortium", "--name", "site-a"], env=env, check=True, capture_output=True, timeout=60)

    stranger = tmp_path / "stranger"
    keygen(stranger)
    nodes = {site: _start([str(_bin_dir() / "flower-supernode"), "--superlink", f"127.0.0.1:{port}",
                           "--root-certificates", str(registered / "ca.crt"),
                           "--auth-supernode-private-key", str(folder / "supernode.key"),
                           "--host", "127.0.0.1", "--port", str(_free_port())], tmp_path / f"{site}.log", env)
             for site, folder in (("site-a", registered), ("stranger", stranger))}
    try:
        assert nodes["stranger"].wait(timeout=START_TIMEOUT_S) != 0
        deadline = time.monotonic() + START_TIMEOUT_S
        while '"online"' not in _supernode_list(env):
            assert nodes["site-a"].poll() is None, (tmp_path / "site-a.log").read_text()
            assert time.monotonic() < deadline, _supernode_list(env)
            time.sleep(1.0)
    finally:
        for process in nodes.values():
            _stop(process)


def _supernode_list(env: dict[str, str]) -> str:
    return subprocess.run([str(_bin_dir() / "flwr"), "supernode", "list", "consortium", "--format", "json"],
                          env=env, check=True, capture_output=True, text=True, timeout=60).stdout
