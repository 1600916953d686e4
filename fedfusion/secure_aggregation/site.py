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
    MASKED_INPUT,
    MASKING_KEY_SHARE,
    SELF_MASK_SHARE,
    bytes_to_private_key,
    bytes_to_public_key,
    decrypt,
    encrypt,
    generate_key_pair,
    generate_signing_key,
    is_signed,
    private_key_to_bytes,
    public_key_to_bytes,
    share_plaintext,
    shared_key,
    sign,
    signed_share_plaintext,
    split_signed_share_plaintext,
    statement,
)
from fedfusion.secure_aggregation.masks import (
    SEED_BYTES,
    mask_vector,
    masked_input_digest,
    pairwise_seed,
    private_key_to_scalar,
    seed_commitment,
)
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
        self._signing_private, signing_public = generate_signing_key()
        self._self_mask_seed = os.urandom(SEED_BYTES)
        self._public = PublicKeys(
            site_id, public_key_to_bytes(encryption_public), public_key_to_bytes(masking_public),
            check_weight(weight, str(site_id)), signing_public,
            seed_commitment(self._self_mask_seed, config.round_nonce),
        )
        self._peer_keys: dict[int, PublicKeys] = {}
        self._self_mask_shares: dict[int, bytes] = {}
        self._masking_key_shares: dict[int, bytes] = {}
        self._self_mask_signatures: dict[int, bytes] = {}
        self._masking_key_signatures: dict[int, bytes] = {}
        self._rejected: list[int] = []

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
            "signing-private": self._signing_private,
            "signing-public": self._public.signing_key,
            "seed-commitment": self._public.seed_commitment,
            "weight": self._public.weight,
            "self-mask-seed": self._self_mask_seed,
            "peers": peers,
            "peer-encryption-keys": [self._peer_keys[p].encryption_key for p in peers],
            "peer-masking-keys": [self._peer_keys[p].masking_key for p in peers],
            "peer-weights": [self._peer_keys[p].weight for p in peers],
            "peer-signing-keys": [self._peer_keys[p].signing_key for p in peers],
            "peer-seed-commitments": [self._peer_keys[p].seed_commitment for p in peers],
            "share-sites": list(self._self_mask_shares),
            "self-mask-shares": list(self._self_mask_shares.values()),
            "masking-key-shares": [self._masking_key_shares[p] for p in self._self_mask_shares],
            "self-mask-signatures": [self._self_mask_signatures[p] for p in self._self_mask_shares],
            "masking-key-signatures": [self._masking_key_signatures[p] for p in self._self_mask_shares],
            "rejected": list(self._rejected),
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
        site._signing_private = blob("signing-private")
        site._public = PublicKeys(
            site.site_id, blob("encryption-public"), blob("masking-public"), cast(int, secrets["weight"]),
            blob("signing-public"), blob("seed-commitment"),
        )
        site._self_mask_seed = blob("self-mask-seed")
        site._peer_keys = {
            int(p): PublicKeys(int(p), e, m, w, s, c)
            for p, e, m, w, s, c in zip(ints("peers"), blobs("peer-encryption-keys"), blobs("peer-masking-keys"),
                                        ints("peer-weights"), blobs("peer-signing-keys"),
                                        blobs("peer-seed-commitments"), strict=False)
        }
        holders = ints("share-sites")
        site._self_mask_shares = dict(zip(holders, blobs("self-mask-shares"), strict=False))
        site._masking_key_shares = dict(zip(holders, blobs("masking-key-shares"), strict=False))
        site._self_mask_signatures = dict(zip(holders, blobs("self-mask-signatures"), strict=False))
        site._masking_key_signatures = dict(zip(holders, blobs("masking-key-signatures"), strict=False))
        site._rejected = ints("rejected")
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
        binding = self.config.binding(self.announced_weight)
        ciphertexts: dict[int, bytes] = {}
        for other, seed_share, key_share in zip(order, seed_shares, key_shares, strict=True):
            seed_signature = sign(self._signing_private,
                                  statement(binding, SELF_MASK_SHARE, self.site_id, other, seed_share))
            key_signature = sign(self._signing_private,
                                 statement(binding, MASKING_KEY_SHARE, self.site_id, other, key_share))
            if other == self.site_id:
                self._keep_share(other, seed_share, key_share, seed_signature, key_signature)
                continue
            plaintext = share_plaintext(self.site_id, other, seed_share, key_share)
            ciphertexts[other] = encrypt(self._share_key(other),
                                         signed_share_plaintext(plaintext, seed_signature, key_signature))
        return EncryptedShares(self.site_id, ciphertexts)

    def _keep_share(self, dealer: int, seed_share: bytes, key_share: bytes, seed_signature: bytes,
                    key_signature: bytes) -> None:
        self._self_mask_shares[dealer] = seed_share
        self._masking_key_shares[dealer] = key_share
        self._self_mask_signatures[dealer] = seed_signature
        self._masking_key_signatures[dealer] = key_signature

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
        return self._signed(layout_of(update), self._mask(vector, set(ciphertexts)))

    def masked_words(self, ciphertexts: Mapping[int, bytes], layout: Layout, words: NDArray[np.uint32]) -> MaskedInput:
        """Stage 3 for a vector already in the integer domain (distributed DP's noisy words): keep the shares
        sent to this site, then mask ``words`` (``layout``'s values in order) as `masked_input` masks its levels."""
        if words.dtype != np.uint32 or len(words) != vector_length(layout):
            raise PrivacyError(f"site {self.site_id}: the words to mask do not fit the update's layout")
        self._receive_shares(ciphertexts)
        return self._signed(layout, self._mask(words.copy(), set(ciphertexts)))

    def _signed(self, layout: Layout, vector: NDArray[np.uint32]) -> MaskedInput:
        """The masked input with this site's signature of it for this round, and its complaints."""
        digest = masked_input_digest(layout, vector)
        tag = sign(self._signing_private,
                   statement(self.config.binding(self.announced_weight), MASKED_INPUT, self.site_id, digest))
        return MaskedInput(self.site_id, layout, vector, tag, tuple(self._rejected))

    def _receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Keep each sender's shares that decrypt, are addressed from it to this site and carry its signatures for
        this round; complain about the others (the site still pairs with every sender in its mask, so the
        coordinator can treat a dealer complained about as a dropout and remove its pairwise masks)."""
        self._advance(Stage.SHARES_SENT, Stage.INPUT_SENT)
        senders = set(ciphertexts)
        if not senders <= set(self._peer_keys) - {self.site_id} or len(senders) + 1 < self.config.threshold:
            raise PrivacyError(
                f"site {self.site_id}: shares came from {len(senders)} known sites; secure aggregation needs "
                f"{self.config.threshold - 1} other sites that announced keys"
            )
        binding = self.config.binding(self.announced_weight)
        for sender, ciphertext in ciphertexts.items():
            try:
                source, destination, seed_share, key_share, seed_signature, key_signature = (
                    split_signed_share_plaintext(decrypt(self._share_key(sender), ciphertext)))
            except (InvalidToken, ValueError):
                self._rejected.append(sender)  # undecryptable or cut short: the coordinator drops the dealer
                continue
            signing_key = self._peer_keys[sender].signing_key
            if ((source, destination) != (sender, self.site_id)
                    or not is_signed(signing_key, seed_signature,
                                     statement(binding, SELF_MASK_SHARE, sender, self.site_id, seed_share))
                    or not is_signed(signing_key, key_signature,
                                     statement(binding, MASKING_KEY_SHARE, sender, self.site_id, key_share))):
                self._rejected.append(sender)
                continue
            self._keep_share(sender, seed_share, key_share, seed_signature, key_signature)

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
        named site shared its keys with this site; a site whose share did not verify here is left out of the answer.
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
        if self.site_id not in survivors or not (survivors | dropouts) <= set(self._self_mask_shares) | set(
                self._rejected):
            raise PrivacyError(f"site {self.site_id}: the unmask request names sites that did not share keys here")
        if len(survivors) < self.config.threshold:
            raise PrivacyError(
                f"site {self.site_id}: only {len(survivors)} sites survived, fewer than the threshold "
                f"{self.config.threshold}; nothing is unmasked"
            )
        kept_survivors = sorted(survivors & set(self._self_mask_shares))
        kept_dropouts = sorted(dropouts & set(self._masking_key_shares))
        return UnmaskShares(
            self.site_id,
            {site: self._self_mask_shares[site] for site in kept_survivors},
            {site: self._masking_key_shares[site] for site in kept_dropouts},
            {site: self._self_mask_signatures[site] for site in kept_survivors},
            {site: self._masking_key_signatures[site] for site in kept_dropouts},
        )
