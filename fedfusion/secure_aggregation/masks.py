"""Masks: seeds expanded into uniform vectors modulo the modulus, and the pairwise seed two sites agree on.

Flower's `pseudo_rand_gen` folds a seed into 32 bits for NumPy's RandomState, so a mask could be found by trying
2**32 seeds. Masks here are the AES-256-CTR keystream of the full 32-byte seed instead (a CSPRNG), reduced
modulo a power of two, which keeps them uniform.
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


def mask_vector(seed: bytes, length: int, modulus: int) -> NDArray[np.int64]:
    """Expand a 32-byte seed into `length` integers uniform in [0, modulus) (modulus a power of two)."""
    encryptor = Cipher(algorithms.AES256(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    words = np.frombuffer(stream, dtype=np.uint64) & np.uint64(modulus - 1)
    return words.astype(np.int64)


def pairwise_seed(own_private_key: ec.EllipticCurvePrivateKey, other_public_key: bytes) -> bytes:
    """Seed of the mask shared by two sites: ECDH of one's private and the other's public key, through HKDF."""
    return base64.urlsafe_b64decode(generate_shared_key(own_private_key, bytes_to_public_key(other_public_key)))
