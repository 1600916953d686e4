"""The consortium's certificate authority: an EC P-384 key and a self-signed certificate.

The CA key stays in the operator's ``ca/`` folder; only the certificate is handed out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedfusion.errors import ConfigError
from fedfusion.provisioning.key_files import write_private, write_public

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
CA_VALIDITY_DAYS = 3650


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's private key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        """The CA certificate in PEM, the file every party uses to verify the coordinator."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


def create_ca(consortium_name: str) -> CertificateAuthority:
    """A new CA named after the consortium (key usage: certificate and CRL signing only)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{consortium_name} CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return CertificateAuthority(key=key, cert=cert)


def save_ca(ca: CertificateAuthority, ca_dir: Path) -> None:
    """Write ``ca.key`` (0600) and ``ca.crt`` into the operator's CA folder."""
    key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    write_private(ca_dir / CA_KEY_FILE, key_pem)
    write_public(ca_dir / CA_CERT_FILE, ca.cert_pem())


def load_ca_cert_pem(ca_dir: Path) -> bytes:
    """The CA certificate (PEM) from the operator's CA folder; the CA key is not read."""
    path = ca_dir / CA_CERT_FILE
    if not path.is_file():
        raise ConfigError(f"CA certificate {path} is missing: is {ca_dir.parent} a consortium folder?")
    return path.read_bytes()
