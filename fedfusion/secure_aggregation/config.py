"""`SecAggConfig`: the numbers every site and the coordinator must agree on for one SecAgg+ round."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

from fedfusion.errors import ConfigError

WORD_BITS = 32
"""Masked vectors are uint32 words added modulo 2**32 (NumPy's wrap-around: no modulo operation is needed)."""
WORD_LIMIT = 2**WORD_BITS
ROUND_NONCE_BYTES = 16


@dataclass(frozen=True)
class SecAggConfig:
    """Secure-aggregation parameters of one round.

    Parameters
    ----------
    num_sites : int
        Sites invited to the round (N); each one's seeds are Shamir-shared among all N.
    threshold : int
        Shares needed to reconstruct a seed (t). Must be more than N/2: then a coordinator that tells one group
        of sites "j survived" and another "j dropped out" cannot collect t shares of both of j's seeds, and
        fewer than t surviving sites means nothing is unmasked.
    clipping_range : float
        Every value is clipped to [-clipping_range, clipping_range] before quantization; a value beyond the
        range counts as the range's end.
    quantization_range : int
        Quantization levels (R) of one site's (weight-scaled) value: it maps to an integer in [0, R], one step
        = 2 * clipping_range / R. The N sites' levels add up to at most N * R, which must stay below 2**32.
        0 (the default) takes the largest R that fits: floor((2**32 - 1) / N).
    round_nonce : bytes
        Fresh random bytes the coordinator draws for each round (default: 16 from the OS). They are part of
        `binding`, so every pairwise mask and every signature of the round is bound to this round alone: a masked
        input or a share made for another round (of any study, before or after a restart) neither cancels nor
        verifies.
    """

    num_sites: int
    threshold: int
    clipping_range: float = 8.0
    quantization_range: int = 0
    round_nonce: bytes = field(default_factory=lambda: os.urandom(ROUND_NONCE_BYTES))

    def __post_init__(self) -> None:
        if self.num_sites < 2:
            raise ConfigError(f"secure aggregation: num_sites must be at least 2, got {self.num_sites}")
        if not self.num_sites / 2 < self.threshold <= self.num_sites:
            raise ConfigError(
                f"secure aggregation: threshold must be more than num_sites/2 and at most num_sites "
                f"({self.num_sites}), got {self.threshold}"
            )
        if not self.clipping_range > 0:
            raise ConfigError(f"secure aggregation: clipping_range must be positive, got {self.clipping_range}")
        if self.quantization_range and not 2 <= self.quantization_range <= (WORD_LIMIT - 1) // self.num_sites:
            raise ConfigError(
                f"secure aggregation: quantization_range must be 0 (largest) or in "
                f"[2, {(WORD_LIMIT - 1) // self.num_sites}] so that {self.num_sites} sites' levels add up below "
                f"2**{WORD_BITS}, got {self.quantization_range}"
            )
        if len(self.round_nonce) < ROUND_NONCE_BYTES:
            raise ConfigError(f"secure aggregation: round_nonce must hold at least {ROUND_NONCE_BYTES} bytes, "
                              f"got {len(self.round_nonce)}")

    @property
    def levels(self) -> int:
        """R: the quantization levels in use."""
        return self.quantization_range or (WORD_LIMIT - 1) // self.num_sites

    @property
    def step(self) -> float:
        """One quantization step, 2 * clipping_range / R."""
        return 2 * self.clipping_range / self.levels

    def binding(self, total_weight: int) -> bytes:
        """A digest of the config (round nonce included) and the round's total weight, bound into the pairwise
        masks and every signature: sites that were told different configs, key lists or rounds get masks that do
        not cancel, so nothing can be unmasked."""
        numbers = {**asdict(self), "round_nonce": self.round_nonce.hex(), "total_weight": total_weight}
        return hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).digest()
