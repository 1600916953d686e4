"""The coordinator's (SuperLink's) TLS server certificate, signed by the consortium CA."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfusion.errors import ConfigError
from fedfusion.provisioning.ca import CertificateAuthority

SERVER_VALIDITY_DAYS = 825


def issue_server_certificate(
    ca: CertificateAuthority, common_name: str, addresses: Sequence[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new EC P-384 key and a TLS server certificate for it, valid for each host name or IP in ``addresses``."""
    if not addresses:
        raise ConfigError(f"coordinator {common_name!r}: at least one --coordinator-address is needed")
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([subject_alternative_name(a) for a in addresses]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA384())
    )
    return key, cert


def subject_alternative_name(address: str) -> x509.GeneralName:
    """An IP address SAN for an IPv4/IPv6 literal, otherwise a DNS name SAN."""
    text = address.strip().strip("[]")
    if not text:
        raise ConfigError("coordinator address is empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)
