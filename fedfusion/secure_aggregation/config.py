"""`SecAggConfig`: the numbers every site and the coordinator must agree on for one SecAgg+ round."""

from __future__ import annotations

from dataclasses import dataclass

from fedfusion.errors import ConfigError

# Levels stay within int32 like Flower's `quantize`; masked vectors are added modulo 2**64 (uint64 wrap-around),
# so the unmasked sum is exact when it stays below 2**64; `modulus` (its power-of-two bound) stays at or below 2**62.
MAX_QUANTIZATION_RANGE = 2**31 - 1
MAX_MODULUS = 2**62


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
        Quantization levels (R): a clipped value maps to an integer in [0, R], one step = 2 * clipping_range / R,
        which bounds the error of each value (and of the weighted average).
    max_weight : int
        Largest weight (number of patients) a site may send; the modulus is sized for it.
    """

    num_sites: int
    threshold: int
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    max_weight: int = 100_000

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
        if not 2 <= self.quantization_range <= MAX_QUANTIZATION_RANGE:
            raise ConfigError(
                f"secure aggregation: quantization_range must be in [2, {MAX_QUANTIZATION_RANGE}], "
                f"got {self.quantization_range}"
            )
        if self.max_weight < 1:
            raise ConfigError(f"secure aggregation: max_weight must be at least 1, got {self.max_weight}")
        if self.modulus > MAX_MODULUS:
            raise ConfigError(
                f"secure aggregation: num_sites * max_weight * quantization_range = {self.max_weighted_sum} "
                f"needs a modulus above 2**62; lower max_weight or quantization_range"
            )

    @property
    def max_weighted_sum(self) -> int:
        """Largest possible entry of the unmasked sum: N sites, each at most max_weight * R."""
        return self.num_sites * self.max_weight * self.quantization_range

    @property
    def modulus(self) -> int:
        """Bound of the unmasked sum: the smallest power of two above `max_weighted_sum`.

        Every entry of sum_i(w_i * q_i) lies in [0, N * max_weight * R] and the summed weight in
        [0, N * max_weight], so the unmasked sum (computed modulo 2**64 >= modulus) never wraps around.
        """
        return 1 << self.max_weighted_sum.bit_length()
