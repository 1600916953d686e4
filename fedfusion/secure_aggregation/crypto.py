"""The SecAgg+ building blocks, on the ``cryptography`` package: key pairs, key agreement, share encryption.

They behave exactly as Flower 1.41's helpers that fedfusion used before (``flwr.supercore.primitives.asymmetric``,
``flwr.common.secure_aggregation.crypto.symmetric_encryption``, ``flwr.common.secure_aggregation.secaggplus_utils``):
same curve, same serialized key bytes, same derived keys, same ciphertext format and share plaintext layout, so
sites on either implementation interoperate. They are written here so that the protocol does not depend on Flower's
non-public modules (``tests/secure_aggregation/test_secagg_core.py`` cross-checks them against Flower's).

Beyond Flower's helpers, each site signs with a fresh Ed25519 key per round (public key announced in stage 1):
every share it deals and its masked input, over the round's binding (`statement`). What a site encrypts for
another is Flower's share plaintext followed by the dealer's two signatures (`signed_share_plaintext`). The
coordinator can then tell who altered a share or replayed a masked input (docs/THREAT_MODEL.md, "Secure
aggregation under a hostile site").
"""

from __future__ import annotations

import base64
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CURVE = ec.SECP384R1()
"""The curve of every SecAgg+ key pair (as Flower's ``generate_key_pairs``)."""
SHARED_KEY_BYTES = 32
"""Length of the HKDF output: a Fernet key."""


def generate_key_pair() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    """A fresh key pair on `CURVE`."""
    private_key = ec.generate_private_key(CURVE)
    return private_key, private_key.public_key()


def private_key_to_bytes(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (kept only in the site's own state, never sent)."""
    return private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def bytes_to_private_key(private_key_bytes: bytes) -> ec.EllipticCurvePrivateKey:
    """The inverse of `private_key_to_bytes`."""
    return cast(ec.EllipticCurvePrivateKey, serialization.load_pem_private_key(private_key_bytes, password=None))


def public_key_to_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM: what a site announces in stage 1."""
    return public_key.public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bytes_to_public_key(public_key_bytes: bytes) -> ec.EllipticCurvePublicKey:
    """The inverse of `public_key_to_bytes`."""
    return cast(ec.EllipticCurvePublicKey, serialization.load_pem_public_key(public_key_bytes))


def shared_key(private_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The key two sites agree on: ECDH, then HKDF-SHA256 (no salt, no info) to 32 bytes, urlsafe-base64 encoded
    (a Fernet key)."""
    derived = HKDF(algorithm=hashes.SHA256(), length=SHARED_KEY_BYTES, salt=None, info=None).derive(
        private_key.exchange(ec.ECDH(), public_key)
    )
    return base64.urlsafe_b64encode(derived)


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    """Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp) encryption under a `shared_key`."""
    return Fernet(key).encrypt(plaintext)


def decrypt(key: bytes, ciphertext: bytes) -> bytes:
    """The inverse of `encrypt`; ``cryptography.fernet.InvalidToken`` when the key or ciphertext is wrong."""
    return Fernet(key).decrypt(ciphertext)


def share_plaintext(source: int, destination: int, seed_share: bytes, key_share: bytes) -> bytes:
    """What a site encrypts for another in stage 2: both site ids (8 bytes each, little-endian), the seed share's
    length (4 bytes), the seed share, then the masking-key share."""
    return b"".join([
        source.to_bytes(8, "little", signed=False),
        destination.to_bytes(8, "little", signed=False),
        len(seed_share).to_bytes(4, "little"),
        seed_share,
        key_share,
    ])


def split_share_plaintext(plaintext: bytes) -> tuple[int, int, bytes, bytes]:
    """The inverse of `share_plaintext`: (source, destination, seed share, masking-key share)."""
    source = int.from_bytes(plaintext[:8], "little", signed=False)
    destination = int.from_bytes(plaintext[8:16], "little", signed=False)
    seed_length = int.from_bytes(plaintext[16:20], "little")
    return source, destination, plaintext[20 : 20 + seed_length], plaintext[20 + seed_length :]


SIGNATURE_BYTES = 64
"""Length of an Ed25519 signature."""
SELF_MASK_SHARE = "self-mask-share"
"""The `statement` kind a dealer signs for a share of its self-mask seed."""
MASKING_KEY_SHARE = "masking-key-share"
"""The `statement` kind a dealer signs for a share of its masking private key."""
MASKED_INPUT = "masked-input"
"""The `statement` kind a site signs for its masked input (its digest, `masks.masked_input_digest`)."""


def generate_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair for one round, as raw bytes: (private, public)."""
    private_key = Ed25519PrivateKey.generate()
    return (private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption()),
            private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign(private_key: bytes, message: bytes) -> bytes:
    """The Ed25519 signature of ``message`` under a raw private key from `generate_signing_key`."""
    return Ed25519PrivateKey.from_private_bytes(private_key).sign(message)


def is_signed(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` under the raw ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def statement(binding: bytes, kind: str, *parts: int | bytes) -> bytes:
    """What a site signs: the round's binding (config, round nonce, total weight), what it is (``kind``) and the
    site ids and digests it is about, each length-prefixed so that no two statements read the same."""
    fields = [binding, kind.encode(), *(p.to_bytes(8, "little") if isinstance(p, int) else p for p in parts)]
    return b"".join(len(f).to_bytes(4, "little") + f for f in fields)


def signed_share_plaintext(plaintext: bytes, seed_signature: bytes, key_signature: bytes) -> bytes:
    """A `share_plaintext` followed by the dealer's signatures of its seed share and of its key share."""
    return plaintext + seed_signature + key_signature


def split_signed_share_plaintext(signed: bytes) -> tuple[int, int, bytes, bytes, bytes, bytes]:
    """The inverse of `signed_share_plaintext`: (source, destination, seed share, key share, seed signature,
    key signature); ``ValueError`` when it is too short to hold them."""
    if len(signed) < 20 + 2 * SIGNATURE_BYTES:
        raise ValueError("a signed share plaintext is too short")
    source, destination, seed_share, key_share = split_share_plaintext(signed[: -2 * SIGNATURE_BYTES])
    return (source, destination, seed_share, key_share, signed[-2 * SIGNATURE_BYTES : -SIGNATURE_BYTES],
            signed[-SIGNATURE_BYTES:])


def is_public_key(data: bytes) -> bool:
    """True when ``data`` is a PEM public key on `CURVE` (what stage 1 must announce)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == CURVE.name


def is_signing_key(data: bytes) -> bool:
    """True when ``data`` is a raw Ed25519 public key."""
    try:
        Ed25519PublicKey.from_public_bytes(data)
    except ValueError:
        return False
    return True
