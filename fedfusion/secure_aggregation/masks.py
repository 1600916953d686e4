"""Masks: seeds expanded into uniform uint32 vectors, and the pairwise seed two sites agree on.

Flower's `pseudo_rand_gen` folds a seed into 32 bits for NumPy's RandomState, so a mask could be found by trying
2**32 seeds. Masks here are the AES-256-CTR keystream of the full 32-byte seed instead (a CSPRNG, written straight
into the vector's memory), read as uint32 words: uniform modulo 2**32, the modulus of all masked arithmetic.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from fedfusion.secure_aggregation.crypto import CURVE, bytes_to_public_key, shared_key
from fedfusion.secure_aggregation.quantize import Layout, layout_json

SEED_BYTES = 32
SCALAR_BYTES = 48


def mask_vector(seed: bytes, length: int) -> NDArray[np.uint32]:
    """Expand a 32-byte seed into `length` words uniform modulo 2**32."""
    encryptor = Cipher(algorithms.AES256(seed), modes.CTR(bytes(16))).encryptor()
    # CTR may hold back up to one block, so the output buffer has 15 spare bytes.
    buffer = np.empty(4 * length + 15, dtype=np.uint8)
    written = encryptor.update_into(bytes(4 * length), buffer.data)
    if written != 4 * length:
        buffer[written : 4 * length] = np.frombuffer(encryptor.finalize(), dtype=np.uint8)
    return buffer[: 4 * length].view(np.uint32)


def pairwise_seed(own_private_key: ec.EllipticCurvePrivateKey, other_public_key: bytes, binding: bytes) -> bytes:
    """Seed of the mask shared by two sites: ECDH of one's private and the other's public key, through HKDF,
    hashed with `binding` (the round's config and total weight): sites that were told different rounds get
    masks that do not cancel."""
    shared = base64.urlsafe_b64decode(shared_key(own_private_key, bytes_to_public_key(other_public_key)))
    return hashlib.sha256(shared + binding).digest()


def private_key_to_scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key's scalar (48 bytes): what is Shamir-shared, 4 chunks instead of a PEM's 20."""
    return key.private_numbers().private_value.to_bytes(SCALAR_BYTES, "big")


def scalar_to_private_key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    """The private key of a scalar from `private_key_to_scalar`."""
    return ec.derive_private_key(int.from_bytes(scalar, "big"), CURVE)


def seed_commitment(seed: bytes, round_nonce: bytes) -> bytes:
    """What a site announces in stage 1 about its self-mask seed: SHA-256 of a label, the round nonce and the seed
    (32 random bytes, so the digest reveals nothing). A seed rebuilt from shares must match it."""
    return hashlib.sha256(b"fedfusion-secagg-self-mask-seed" + round_nonce + seed).digest()


def masked_input_digest(layout: Layout, vector: NDArray[np.uint32]) -> bytes:
    """SHA-256 of a masked input's layout and words: what its site signs, and what the coordinator remembers to
    recognise a masked input sent again in a later round."""
    return hashlib.sha256(layout_json(layout).encode() + np.ascontiguousarray(vector).tobytes()).digest()
