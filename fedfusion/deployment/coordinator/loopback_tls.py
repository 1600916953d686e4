"""A private TLS certificate for the SuperLink's loopback port, made fresh by the coordinator daemon.

The SuperLink needs TLS for SuperNode authentication, but its port is reachable from this host only; the
consortium certificate is served by the gateway. So the daemon makes its own throw-away CA and a certificate
for 127.0.0.1/localhost at every start: the CA key is never written, only the certificates and the server key
(0600) under the coordinator's state folder, read by the SuperLink, the gateway and the operator's commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fedfusion.provisioning.ca import create_ca
from fedfusion.provisioning.certificates import issue_server_certificate
from fedfusion.provisioning.key_files import write_private, write_public

LOOPBACK_ADDRESSES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LoopbackTls:
    """Files of the loopback SuperLink's TLS: the CA to trust and the server certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def loopback_tls_files(folder: Path) -> LoopbackTls:
    """Where :func:`make_loopback_tls` writes its files."""
    return LoopbackTls(folder / "ca.crt", folder / "superlink.crt", folder / "superlink.key")


def make_loopback_tls(folder: Path) -> LoopbackTls:
    """Write a new loopback CA certificate, server certificate and key into ``folder``."""
    ca = create_ca("fedfusion coordinator loopback")
    key, cert = issue_server_certificate(ca, "superlink-loopback", LOOPBACK_ADDRESSES)
    files = loopback_tls_files(folder)
    write_public(files.ca_file, ca.cert_pem())
    write_public(files.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    write_private(files.key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return files
