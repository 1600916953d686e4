"""Shamir secret sharing of byte strings, in Flower's share format, without a thread pool.

Flower's `flwr.common.secure_aggregation.crypto.shamir` splits a secret into 16-byte chunks and shares each with
PyCryptodome's `Shamir` in a new thread pool per call; for the few chunks of a seed or a key, starting the pool
costs more than the work (a 5-site round spent most of its fixed cost there). Same chunks, same share bytes
(<4-byte index><16-byte share per chunk>), one thread.
"""

from __future__ import annotations

from Crypto.Protocol.SecretSharing import Shamir
from Crypto.Util.Padding import pad, unpad

CHUNK = 16


def create_shares(secret: bytes, threshold: int, num: int) -> list[bytes]:
    """`num` shares of `secret`, any `threshold` of which rebuild it."""
    padded = pad(secret, CHUNK)
    shares = [bytearray(index.to_bytes(4, "little")) for index in range(1, num + 1)]
    for start in range(0, len(padded), CHUNK):
        for index, share in Shamir.split(threshold, num, padded[start : start + CHUNK], ssss=False):
            shares[index - 1] += share
    return [bytes(share) for share in shares]


def combine_shares(shares: list[bytes]) -> bytes:
    """The secret rebuilt from `threshold` shares; ``ValueError`` if they do not fit together."""
    chunks = (len(shares[0]) - 4) // CHUNK
    indexed = [(int.from_bytes(share[:4], "little"), share) for share in shares]
    padded = b"".join(
        Shamir.combine([(index, share[4 + i * CHUNK : 4 + (i + 1) * CHUNK]) for index, share in indexed], ssss=False)
        for i in range(chunks)
    )
    try:
        return unpad(padded, CHUNK)
    except ValueError:
        raise ValueError("Failed to combine shares") from None
