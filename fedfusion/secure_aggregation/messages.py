"""The plain data exchanged between the SecAgg+ stages; each maps onto one Message-API record later.

Stage 1 site -> coordinator: `PublicKeys`; coordinator -> every site: all of them.
Stage 2 site -> coordinator: `EncryptedShares`; coordinator -> each site: the ciphertexts addressed to it.
Stage 3 site -> coordinator: `MaskedInput`; coordinator -> every survivor: `UnmaskRequest`.
Stage 4 site -> coordinator: `UnmaskShares`; the coordinator ends with a `SecureAverage`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedfusion.secure_aggregation.quantize import Layout


@dataclass(frozen=True)
class PublicKeys:
    """A site's two public keys for the round (PEM), one to encrypt shares to it and one to agree pairwise masks,
    its weight (patients; public, as in plain FedAvg's replies), its round signing key (raw Ed25519) and its
    commitment to its self-mask seed (`masks.seed_commitment`)."""

    site_id: int
    encryption_key: bytes
    masking_key: bytes
    weight: int
    signing_key: bytes
    seed_commitment: bytes


@dataclass(frozen=True)
class EncryptedShares:
    """A site's Shamir shares of its self-mask seed and masking private key, encrypted per recipient."""

    site_id: int
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class MaskedInput:
    """A site's masked vector: its weight-scaled, quantized update plus self mask plus pairwise masks, mod 2**32;
    its signature of the vector for this round (`tag`), and the sites whose share to it did not verify."""

    site_id: int
    layout: Layout
    vector: NDArray[np.uint32]
    tag: bytes
    complaints: tuple[int, ...] = ()


@dataclass(frozen=True)
class UnmaskRequest:
    """Which sites sent a masked input (survivors) and which shared keys but did not (dropouts)."""

    survivors: tuple[int, ...]
    dropouts: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskShares:
    """A site's answer: its shares of survivors' self-mask seeds and of dropouts' masking private keys, each with
    the signature its dealer made of it (so a share altered by the site that reveals it is caught and named)."""

    site_id: int
    self_mask_shares: dict[int, bytes]
    masking_key_shares: dict[int, bytes]
    self_mask_signatures: dict[int, bytes]
    masking_key_signatures: dict[int, bytes]


@dataclass(frozen=True)
class SecureAverage:
    """The round's result: the patient-weighted average arrays, the summed weight, the sites it covers and the
    sites dropped for a failed integrity check, with the reason."""

    arrays: dict[str, NDArray[np.float64]]
    total_weight: int
    sites: tuple[int, ...]
    rejected: dict[int, str]
