"""``fedfusion site check --bundle``: can this site's daemon connect? Certificates, reachability, clock skew.

- the bundle's CA certificate and the site's key pair: readable, in date, private key matching ``supernode.pub``;
- the coordinator: a TLS handshake verified with the bundle's CA for the address the site dials, then
  ``GET /health`` through the gateway (the coordinator's certificate expiry is reported);
- the clocks: SuperNode authentication signs timestamps that the SuperLink accepts only within a few seconds
  ahead of its own clock (``SYSTEM_TIME_TOLERANCE``), so the coordinator's ``Date`` header is compared with ours.
Nothing is sent but the health request; no key is registered or used.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedfusion.data.findings import Findings
from fedfusion.deployment.coordinator.fleet_gateway import HEALTH_PATH
from fedfusion.deployment.site.daemon import read_bundle
from fedfusion.flower_compat import SYSTEM_TIME_TOLERANCE
from fedfusion.provisioning.site_keys import SITE_PUBLIC_KEY_FILE, fingerprint, parse_openssh_public_key

EXPIRY_WARNING_DAYS = 30
CONNECT_TIMEOUT_S = 10.0


@dataclass
class ConnectionCheck:
    """What the connection check found, for printing."""

    facts: list[str] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)


def check_connection(bundle_dir: Path, superlink: str | None = None) -> ConnectionCheck:
    """Check a site bundle's certificate and key, and the coordinator it names (or ``superlink``)."""
    result = ConnectionCheck()
    try:
        bundle = read_bundle(bundle_dir)
    except Exception as exc:  # ConfigError naming the file
        result.findings.error(str(bundle_dir), str(exc))
        return result
    _check_certificate(bundle.root_certificates, "CA certificate", result)
    _check_key_pair(bundle.private_key, bundle_dir / SITE_PUBLIC_KEY_FILE, result)
    address = superlink or bundle.superlink
    host, _, port = address.rpartition(":")
    _check_coordinator(host.strip("[]"), int(port), bundle.root_certificates, result)
    return result


def _check_certificate(path: Path, what: str, result: ConnectionCheck) -> None:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        result.findings.error(str(path), f"{what} unreadable: {exc}")
        return
    _check_dates(cert, f"{what} {path}", result)


def _check_dates(cert: x509.Certificate, what: str, result: ConnectionCheck) -> None:
    now = datetime.datetime.now(datetime.UTC)
    left = cert.not_valid_after_utc - now
    if cert.not_valid_before_utc > now or left.total_seconds() <= 0:
        result.findings.error(what, f"not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                                    f"{cert.not_valid_after_utc:%Y-%m-%d})")
    elif left.days < EXPIRY_WARNING_DAYS:
        result.findings.warning(what, f"expires in {left.days} days ({cert.not_valid_after_utc:%Y-%m-%d})")
    else:
        result.facts.append(f"{what}: valid until {cert.not_valid_after_utc:%Y-%m-%d}")


def _check_key_pair(private_path: Path, public_path: Path, result: ConnectionCheck) -> None:
    try:
        private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
        public = parse_openssh_public_key(public_path.read_text(encoding="ascii"), source=str(public_path))
    except (OSError, ValueError, TypeError) as exc:
        result.findings.error(str(private_path), f"site key pair unreadable: {exc}")
        return
    if private.public_key() != public:
        result.findings.error(str(private_path), f"private key does not match {public_path}")
        return
    result.facts.append(f"site key {private_path}: {fingerprint(public)} (the coordinator must have it registered)")


def _check_coordinator(host: str, port: int, ca_file: Path, result: ConnectionCheck) -> None:
    where = f"coordinator {host}:{port}"
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            result.facts.append(f"{where}: reachable, {tls.version()}, certificate verified by the bundle's CA")
        if der:
            _check_dates(x509.load_der_x509_certificate(der), f"{where} certificate", result)
        connection = http.client.HTTPSConnection(host, port, timeout=CONNECT_TIMEOUT_S, context=context)
        sent = datetime.datetime.now(datetime.UTC)
        connection.request("GET", HEALTH_PATH)
        response = connection.getresponse()
        received = datetime.datetime.now(datetime.UTC)
        date_header = response.getheader("Date")
        response.read()
        connection.close()
    except ssl.SSLCertVerificationError as exc:
        result.findings.error(where, f"its certificate is not valid for this address under the bundle's CA: "
                                     f"{exc.verify_message}")
        return
    except OSError as exc:
        result.findings.error(where, f"not reachable: {exc}")
        return
    if response.status != 200:
        result.findings.error(where, f"health check answered HTTP {response.status}")
    if date_header is None:
        result.findings.warning(where, "no Date header: clock skew not checked")
        return
    theirs = email.utils.parsedate_to_datetime(date_header)
    if theirs.tzinfo is None:  # "GMT" parses as naive; HTTP dates are always UTC
        theirs = theirs.replace(tzinfo=datetime.UTC)
    ours = sent + (received - sent) / 2
    skew = (ours - theirs).total_seconds()  # > 0: this site's clock is ahead
    text = f"this site's clock is {abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} the coordinator's"
    if abs(skew) > SYSTEM_TIME_TOLERANCE - 1:  # the Date header has whole seconds
        result.findings.error("clock", f"{text}; SuperNode authentication needs them within about "
                                       f"{SYSTEM_TIME_TOLERANCE} s: synchronise with NTP")
    else:
        result.facts.append(f"clock: {text} (within {SYSTEM_TIME_TOLERANCE} s)")
