"""`secure_aggregation.crypto` behaves as the Flower 1.41 helpers it replaced (cross-checked against them here)."""

from __future__ import annotations

import pytest
from cryptography.fernet import InvalidToken
from flwr.common.secure_aggregation import secaggplus_utils as flower_secagg
from flwr.common.secure_aggregation.crypto import symmetric_encryption as flower_symmetric
from flwr.supercore.primitives import asymmetric as flower_asymmetric

from fedfusion.secure_aggregation import crypto


def test_key_pairs_and_their_bytes_match_flowers() -> None:
    private, public = crypto.generate_key_pair()
    assert isinstance(private.curve, type(crypto.CURVE))
    assert crypto.public_key_to_bytes(public) == flower_asymmetric.public_key_to_bytes(public)
    assert crypto.private_key_to_bytes(private) == flower_asymmetric.private_key_to_bytes(private)
    flower_private, flower_public = flower_asymmetric.generate_key_pairs()
    assert flower_private.curve.name == private.curve.name
    pem = flower_asymmetric.public_key_to_bytes(flower_public)
    assert crypto.public_key_to_bytes(crypto.bytes_to_public_key(pem)) == pem
    private_pem = flower_asymmetric.private_key_to_bytes(flower_private)
    assert crypto.private_key_to_bytes(crypto.bytes_to_private_key(private_pem)) == private_pem


def test_shared_key_and_encryption_interoperate_with_flowers() -> None:
    a_private, a_public = crypto.generate_key_pair()
    b_private, b_public = flower_asymmetric.generate_key_pairs()
    key = crypto.shared_key(a_private, b_public)
    assert key == flower_symmetric.generate_shared_key(b_private, a_public)
    assert key == flower_symmetric.generate_shared_key(a_private, b_public)
    assert flower_symmetric.decrypt(key, crypto.encrypt(key, b"share")) == b"share"
    assert crypto.decrypt(key, flower_symmetric.encrypt(key, b"share")) == b"share"
    other_key = crypto.shared_key(crypto.generate_key_pair()[0], b_public)
    with pytest.raises(InvalidToken):
        crypto.decrypt(other_key, crypto.encrypt(key, b"share"))


def test_share_plaintext_layout_matches_flowers() -> None:
    plaintext = crypto.share_plaintext(3, 2**40, b"seed-share", b"key-share-bytes")
    assert plaintext == flower_secagg.share_keys_plaintext_concat(3, 2**40, b"seed-share", b"key-share-bytes")
    assert crypto.split_share_plaintext(plaintext) == flower_secagg.share_keys_plaintext_separate(plaintext)
    assert crypto.split_share_plaintext(plaintext) == (3, 2**40, b"seed-share", b"key-share-bytes")
