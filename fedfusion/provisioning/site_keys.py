"""A site's SuperNode-authentication key pair: EC P-384, both halves in OpenSSH format.

Flower's SuperLink accepts a SuperNode whose OpenSSH public key was registered
(``flwr supernode register KEY.pub ...``); the SuperNode signs with ``--auth-supernode-private-key KEY``.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedfusion.errors import ConfigError
from fedfusion.provisioning.key_files import write_private, write_public

SITE_PRIVATE_KEY_FILE = "supernode.key"
SITE_PUBLIC_KEY_FILE = "supernode.pub"
NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def generate_site_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-384 private key for one site."""
    return ec.generate_private_key(ec.SECP384R1())


def private_key_openssh(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key, unencrypted, in OpenSSH's PEM format: the only one ``flower-supernode`` 1.41 reads."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def openssh_public_key(key: ec.EllipticCurvePublicKey) -> str:
    """The public key as one OpenSSH line (``ecdsa-sha2-nistp384 AAAA...``)."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")


def parse_openssh_public_key(text: str, source: str) -> ec.EllipticCurvePublicKey:
    """Load an OpenSSH public key; it must be EC on a NIST curve. ``source`` names it in errors."""
    try:
        key = serialization.load_ssh_public_key(text.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{source}: not an OpenSSH public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, NIST_CURVES):
        raise ConfigError(f"{source}: SuperNode keys must be EC on a NIST curve (P-256, P-384, P-521), "
                          f"got {type(key).__name__}")
    return key


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """The key's SHA-256 fingerprint as ``ssh-keygen -l`` prints it (``SHA256:<base64, no padding>``)."""
    blob = base64.b64decode(openssh_public_key(key).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def write_key_pair(key: ec.EllipticCurvePrivateKey, out_dir: Path) -> None:
    """Write ``supernode.key`` (0600) and ``supernode.pub`` into ``out_dir``."""
    write_private(out_dir / SITE_PRIVATE_KEY_FILE, private_key_openssh(key))
    write_public(out_dir / SITE_PUBLIC_KEY_FILE, (openssh_public_key(key.public_key()) + "\n").encode("ascii"))


def keygen(out_dir: Path) -> ec.EllipticCurvePublicKey:
    """Generate a site key pair into ``out_dir`` (refusing to replace an existing key); return the public key."""
    existing = [out_dir / name for name in (SITE_PRIVATE_KEY_FILE, SITE_PUBLIC_KEY_FILE) if (out_dir / name).exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists: not overwriting a site key")
    key = generate_site_key()
    write_key_pair(key, out_dir)
    return key.public_key()
