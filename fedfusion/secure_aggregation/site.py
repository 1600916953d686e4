"""`SecAggSite`: one site's side of a SecAgg+ round, as a state machine of four stages.

The masking graph is complete (every site pairs with every other), the SecAgg+ setting with k = N - 1.
All keys and seeds are fresh per round: make one `SecAggSite` per round. Between the stages a site may keep its
secrets outside the process (`secrets` / `from_secrets`, e.g. in Flower's per-node `context.state`); they must
never leave the site.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from typing import cast

import numpy as np
from cryptography.fernet import InvalidToken
from numpy.typing import NDArray

from fedfusion.errors import PrivacyError
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.crypto import (
    bytes_to_private_key,
    bytes_to_public_key,
    decrypt,
    encrypt,
    generate_key_pair,
    private_key_to_bytes,
    public_key_to_bytes,
    share_plaintext,
    shared_key,
    split_share_plaintext,
)
from fedfusion.secure_aggregation.masks import SEED_BYTES, mask_vector, pairwise_seed, private_key_to_scalar
from fedfusion.secure_aggregation.messages import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedfusion.secure_aggregation.quantize import (
    Layout,
    check_weight,
    layout_of,
    scaled_quantized_vector,
    vector_length,
)
from fedfusion.secure_aggregation.shamir import create_shares

Secret = int | bytes | list[int] | list[bytes]
"""A value of a site's kept secrets (what Flower's ConfigRecord holds)."""


class Stage(Enum):
    """Where a site is in the round; each stage may run once, in order."""

    NEW = 0
    KEYS_SENT = 1
    SHARES_SENT = 2
    INPUT_SENT = 3
    UNMASKED = 4


class SecAggSite:
    """A site's secrets for one round and the four answers it gives the coordinator."""

    def __init__(self, site_id: int, config: SecAggConfig, weight: int) -> None:
        self.site_id = site_id
        self.config = config
        self._stage = Stage.NEW
        self._encryption_private, encryption_public = generate_key_pair()
        self._masking_private, masking_public = generate_key_pair()
        self._public = PublicKeys(
            site_id, public_key_to_bytes(encryption_public), public_key_to_bytes(masking_public),
            check_weight(weight, str(site_id)),
        )
        self._self_mask_seed = os.urandom(SEED_BYTES)
        self._peer_keys: dict[int, PublicKeys] = {}
        self._self_mask_shares: dict[int, bytes] = {}
        self._masking_key_shares: dict[int, bytes] = {}

    def secrets(self) -> dict[str, Secret]:
        """Everything the site needs for its next stage, as plain values (private keys and seeds included)."""
        peers = sorted(self._peer_keys)
        return {
            "site-id": self.site_id,
            "stage": self._stage.value,
            "encryption-private": private_key_to_bytes(self._encryption_private),
            "masking-private": private_key_to_bytes(self._masking_private),
            "encryption-public": self._public.encryption_key,
            "masking-public": self._public.masking_key,
            "weight": self._public.weight,
            "self-mask-seed": self._self_mask_seed,
            "peers": peers,
            "peer-encryption-keys": [self._peer_keys[p].encryption_key for p in peers],
            "peer-masking-keys": [self._peer_keys[p].masking_key for p in peers],
            "peer-weights": [self._peer_keys[p].weight for p in peers],
            "self-mask-share-sites": list(self._self_mask_shares),
            "self-mask-shares": list(self._self_mask_shares.values()),
            "masking-key-share-sites": list(self._masking_key_shares),
            "masking-key-shares": list(self._masking_key_shares.values()),
        }

    @classmethod
    def from_secrets(cls, secrets: Mapping[str, Secret], config: SecAggConfig) -> SecAggSite:
        """The site as `secrets` left it (the inverse of `secrets`)."""

        def blob(key: str) -> bytes:
            return cast(bytes, secrets[key])

        def ints(key: str) -> list[int]:
            return cast(list[int], secrets[key])

        def blobs(key: str) -> list[bytes]:
            return cast(list[bytes], secrets[key])

        site = cls.__new__(cls)
        site.site_id = int(cast(int, secrets["site-id"]))
        site.config = config
        site._stage = Stage(secrets["stage"])
        site._encryption_private = bytes_to_private_key(blob("encryption-private"))
        site._masking_private = bytes_to_private_key(blob("masking-private"))
        site._public = PublicKeys(
            site.site_id, blob("encryption-public"), blob("masking-public"), cast(int, secrets["weight"])
        )
        site._self_mask_seed = blob("self-mask-seed")
        site._peer_keys = {
            int(p): PublicKeys(int(p), e, m, w)
            for p, e, m, w in zip(ints("peers"), blobs("peer-encryption-keys"), blobs("peer-masking-keys"),
                                  ints("peer-weights"), strict=False)
        }
        site._self_mask_shares = dict(zip(ints("self-mask-share-sites"), blobs("self-mask-shares"), strict=False))
        site._masking_key_shares = dict(zip(ints("masking-key-share-sites"), blobs("masking-key-shares"),
                                            strict=False))
        return site

    def _advance(self, expected: Stage, following: Stage) -> None:
        if self._stage is not expected:
            raise PrivacyError(
                f"site {self.site_id}: secure-aggregation request out of order "
                f"(at stage {self._stage.name}, request needs {expected.name})"
            )
        self._stage = following

    def public_keys(self) -> PublicKeys:
        """Stage 1: the site's two public keys for this round, and its weight."""
        self._advance(Stage.NEW, Stage.KEYS_SENT)
        return self._public

    def share_keys(self, all_keys: Mapping[int, PublicKeys]) -> EncryptedShares:
        """Stage 2: Shamir-share the self-mask seed and the masking private key, one ciphertext per other site."""
        self._advance(Stage.KEYS_SENT, Stage.SHARES_SENT)
        if all_keys.get(self.site_id) != self._public:
            raise PrivacyError(f"site {self.site_id}: the key list does not hold this site's own public keys")
        if not self.config.threshold <= len(all_keys) <= self.config.num_sites:
            raise PrivacyError(
                f"site {self.site_id}: {len(all_keys)} sites announced keys; secure aggregation needs "
                f"{self.config.threshold} to {self.config.num_sites}"
            )
        published = [key for keys in all_keys.values() for key in (keys.encryption_key, keys.masking_key)]
        if len(set(published)) != len(published) or any(k.site_id != i for i, k in all_keys.items()):
            raise PrivacyError(f"site {self.site_id}: the key list repeats a public key or mislabels a site")
        for keys in all_keys.values():
            check_weight(keys.weight, str(keys.site_id))
        self._peer_keys = dict(all_keys)
        order = sorted(all_keys)
        seed_shares = create_shares(self._self_mask_seed, self.config.threshold, len(order))
        key_shares = create_shares(private_key_to_scalar(self._masking_private), self.config.threshold, len(order))
        ciphertexts: dict[int, bytes] = {}
        for other, seed_share, key_share in zip(order, seed_shares, key_shares, strict=True):
            if other == self.site_id:
                self._self_mask_shares[other] = seed_share
                self._masking_key_shares[other] = key_share
                continue
            plaintext = share_plaintext(self.site_id, other, seed_share, key_share)
            ciphertexts[other] = encrypt(self._share_key(other), plaintext)
        return EncryptedShares(self.site_id, ciphertexts)

    def _share_key(self, other: int) -> bytes:
        return shared_key(self._encryption_private, bytes_to_public_key(self._peer_keys[other].encryption_key))

    @property
    def announced_weight(self) -> int:
        """The total weight of the sites in the key list of stage 2 (bound into the pairwise masks)."""
        return sum(keys.weight for keys in self._peer_keys.values())

    def masked_input(self, ciphertexts: Mapping[int, bytes], update: Mapping[str, NDArray[np.floating]]) -> MaskedInput:
        """Stage 3: keep the shares sent to this site, then mask its update quantized at its weight share.

        `ciphertexts` maps each site that shared its keys to the ciphertext it addressed to this site; only
        those sites are paired with in the mask. The weight share is this site's weight over the total weight
        of the sites that announced keys (the key list of stage 2), which is bound into the pairwise masks.
        """
        self._receive_shares(ciphertexts)
        share = self._public.weight / self.announced_weight
        vector = scaled_quantized_vector(update, share, self.config, str(self.site_id))
        return MaskedInput(self.site_id, layout_of(update), self._mask(vector, set(ciphertexts)))

    def masked_words(self, ciphertexts: Mapping[int, bytes], layout: Layout, words: NDArray[np.uint32]) -> MaskedInput:
        """Stage 3 for a vector already in the integer domain (distributed DP's noisy words): keep the shares
        sent to this site, then mask ``words`` (``layout``'s values in order) as `masked_input` masks its levels."""
        if words.dtype != np.uint32 or len(words) != vector_length(layout):
            raise PrivacyError(f"site {self.site_id}: the words to mask do not fit the update's layout")
        self._receive_shares(ciphertexts)
        return MaskedInput(self.site_id, layout, self._mask(words.copy(), set(ciphertexts)))

    def _receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        self._advance(Stage.SHARES_SENT, Stage.INPUT_SENT)
        senders = set(ciphertexts)
        if not senders <= set(self._peer_keys) - {self.site_id} or len(senders) + 1 < self.config.threshold:
            raise PrivacyError(
                f"site {self.site_id}: shares came from {len(senders)} known sites; secure aggregation needs "
                f"{self.config.threshold - 1} other sites that announced keys"
            )
        for sender, ciphertext in ciphertexts.items():
            try:
                plaintext = decrypt(self._share_key(sender), ciphertext)
            except InvalidToken:
                raise PrivacyError(f"site {self.site_id}: the share from site {sender} does not decrypt") from None
            source, destination, seed_share, key_share = split_share_plaintext(plaintext)
            if (source, destination) != (sender, self.site_id):
                raise PrivacyError(f"site {self.site_id}: the share from site {sender} is addressed elsewhere")
            self._self_mask_shares[sender] = seed_share
            self._masking_key_shares[sender] = key_share

    def _mask(self, vector: NDArray[np.uint32], senders: set[int]) -> NDArray[np.uint32]:
        """``vector`` plus the self mask plus (or minus) the pairwise mask with each of ``senders``, in place."""
        vector += mask_vector(self._self_mask_seed, len(vector))
        binding = self.config.binding(self.announced_weight)
        for other in sorted(senders):
            pairwise = mask_vector(
                pairwise_seed(self._masking_private, self._peer_keys[other].masking_key, binding), len(vector)
            )
            if self.site_id < other:
                vector += pairwise
            else:
                vector -= pairwise
        return vector

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Stage 4: reveal survivors' self-mask seed shares and dropouts' masking-key shares, never both for one site.

        Answered once per round, only if this site is a survivor, at least `threshold` sites survived, and every
        named site shared its keys with this site.
        """
        self._advance(Stage.INPUT_SENT, Stage.UNMASKED)
        survivors, dropouts = set(request.survivors), set(request.dropouts)
        if len(survivors) != len(request.survivors) or len(dropouts) != len(request.dropouts):
            raise PrivacyError(f"site {self.site_id}: the unmask request names a site twice")
        if survivors & dropouts:
            raise PrivacyError(
                f"site {self.site_id}: the unmask request names sites {sorted(survivors & dropouts)} both as "
                f"survivor and as dropout; answering would reveal both of their masks"
            )
        if self.site_id not in survivors or not (survivors | dropouts) <= set(self._self_mask_shares):
            raise PrivacyError(f"site {self.site_id}: the unmask request names sites that did not share keys here")
        if len(survivors) < self.config.threshold:
            raise PrivacyError(
                f"site {self.site_id}: only {len(survivors)} sites survived, fewer than the threshold "
                f"{self.config.threshold}; nothing is unmasked"
            )
        return UnmaskShares(
            self.site_id,
            {site: self._self_mask_shares[site] for site in sorted(survivors)},
            {site: self._masking_key_shares[site] for site in sorted(dropouts)},
        )
