"""Masks: seeds expanded into uniform vectors modulo the modulus, and the pairwise seed two sites agree on.

Flower's `pseudo_rand_gen` folds a seed into 32 bits for NumPy's RandomState, so a mask could be found by trying
2**32 seeds. Masks here are the AES-256-CTR keystream of the full 32-byte seed instead (a CSPRNG, written straight
into the vector's memory), read as uint64 words: uniform modulo 2**64, the modulus of all masked arithmetic
(NumPy's uint64 wrap-around, so no modulo operation is ever needed).
"""

from __future__ import annotations

import base64

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.supercore.primitives.asymmetric import bytes_to_public_key
from numpy.typing import NDArray

SEED_BYTES = 32


def mask_vector(seed: bytes, length: int) -> NDArray[np.uint64]:
    """Expand a 32-byte seed into `length` words uniform modulo 2**64."""
    encryptor = Cipher(algorithms.AES256(seed), modes.CTR(bytes(16))).encryptor()
    # CTR may hold back up to one block, so the output buffer has 15 spare bytes.
    buffer = np.empty(8 * length + 15, dtype=np.uint8)
    written = encryptor.update_into(np.zeros(8 * length, dtype=np.uint8), buffer)
    if written != 8 * length:
        buffer[written : 8 * length] = np.frombuffer(encryptor.finalize(), dtype=np.uint8)
    return buffer[: 8 * length].view(np.uint64)


def pairwise_seed(own_private_key: ec.EllipticCurvePrivateKey, other_public_key: bytes) -> bytes:
    """Seed of the mask shared by two sites: ECDH of one's private and the other's public key, through HKDF."""
    return base64.urlsafe_b64decode(generate_shared_key(own_private_key, bytes_to_public_key(other_public_key)))
