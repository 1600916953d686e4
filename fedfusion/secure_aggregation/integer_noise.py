"""Distributed DP's integer domain: the scale gamma, unbiased rounding, each site's Skellam noise share, the sum.

In distributed mode a site sends ``rround(x / gamma) + Skellam share`` as uint32 words (two's complement of an
int64 value, modulo 2**32) through SecAgg+; the masks cancel modulo 2**32, so the unmasked sum read as int32 and
multiplied by gamma is the noisy sum of every surviving site's clipped gradient sum.

**Why Skellam.** The noise must be added before the values leave the site, in the integer domain the masks live
in. A Skellam variable (the difference of two independent Poisson(mu) draws, variance 2 mu) is an exact integer,
so no quantization of a continuous sample can weaken it, and the sum of the sites' independent shares is again
Skellam with the summed variance. At the variances used here (1e10 integer units per share unless the int32 range
needs a coarser gamma: sigma * 2**31 / W patients, still ~1e8+) its Renyi DP equals the Gaussian mechanism's of
the same variance up to O(1 / variance) (Agarwal, Kairouz, Liu 2021, "The Skellam Mechanism for Differentially
Private Federated Learning", NeurIPS), so the sites account with the central Gaussian DP-SGD accountant (noise
sigma, sample rate q, one step per round).

**Gamma.** The survivors' integer sum must stay inside int32: |sum| < 2**31. Per coordinate, each site's clipped
gradient sum is at most (its sampled patients) * C <= (its training patients) * C, so the float sum is bounded by
W * C with W the training patients of every site that announced keys (public: the FedAvg weights). The rounding
adds less than 1 per site, the noise has total standard deviation at most sigma C / gamma * sqrt(n / (n - t)).
Gamma is chosen so that W C / gamma + 12 noise standard deviations + n < 2**31 (a 12-sigma tail: probability
below 1e-32 per coordinate), and no smaller than keeps a share's variance at most ``SHARE_VARIANCE_LIMIT``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedfusion.errors import ConfigError, PrivacyError
from fedfusion.secure_aggregation.config import WORD_BITS
from fedfusion.secure_aggregation.quantize import Layout

INT32_LIMIT = 1 << (WORD_BITS - 1)
"""The unmasked sum is read as int32: every coordinate must stay within (-2**31, 2**31)."""
NOISE_TAIL_STDS = 12.0
"""Standard deviations of total noise kept inside the int32 range."""
SHARE_VARIANCE_LIMIT = 1e10
"""Largest noise-share variance in integer units. NumPy's Poisson sampler loses accuracy at huge means (measured:
variance 9% low at mean 2.2e14, within 0.2% up to 1e13), so gamma is raised until a share's variance is at most
1e10: still ~4e10 times a site's rounding variance (<= 1/4) and far in the regime where Skellam's RDP is the
Gaussian's."""


@dataclass(frozen=True)
class DistributedNoise:
    """The numbers every site and the coordinator share for one distributed-DP round.

    ``noise_multiplier`` (sigma) and ``max_grad_norm`` (C) define the central Gaussian mechanism; ``tolerance``
    (t) is how many of the round's ``n`` sites may drop out or collude with the coordinator.
    """

    noise_multiplier: float
    max_grad_norm: float
    tolerance: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and self.max_grad_norm > 0 and self.tolerance >= 0):
            raise ConfigError(f"distributed DP needs noise-multiplier > 0, max-grad-norm > 0 and tolerance >= 0, "
                              f"got {self}")

    def required_survivors(self, num_sites: int) -> int:
        """n - t: the fewest sites whose shares make up the central noise; ``ConfigError`` if n < t + 2."""
        if num_sites < self.tolerance + 2:
            raise ConfigError(f"distributed DP with tolerance {self.tolerance} needs at least "
                              f"{self.tolerance + 2} sites in a round, got {num_sites}")
        return num_sites - self.tolerance

    def scale(self, total_weight: int, num_sites: int) -> float:
        """Gamma: the float value of one integer unit, so that the sum of ``num_sites`` sites (``total_weight``
        training patients in all) stays inside int32 (module docstring)."""
        if total_weight < 1:
            raise ConfigError(f"distributed DP: total training patients must be positive, got {total_weight}")
        survivors = self.required_survivors(num_sites)
        central_std = self.noise_multiplier * self.max_grad_norm
        noise_std = central_std * math.sqrt(num_sites / survivors)
        fits = (total_weight * self.max_grad_norm + NOISE_TAIL_STDS * noise_std) / (INT32_LIMIT - num_sites - 1)
        return max(fits, central_std / math.sqrt(survivors * SHARE_VARIANCE_LIMIT))

    def share_variance(self, num_sites: int, gamma: float) -> float:
        """One site's noise variance in integer units: sigma**2 C**2 / (gamma**2 (n - t))."""
        return float((self.noise_multiplier * self.max_grad_norm / gamma) ** 2 / self.required_survivors(num_sites))


def os_seeded_generator() -> np.random.Generator:
    """A NumPy generator seeded with 128 bits from the OS: no other party can regenerate what it draws."""
    return np.random.default_rng(secrets.randbits(128))


def randomized_round(values: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.int64]:
    """Each value rounded down or up with the probabilities that keep its expectation: floor(x) + Bernoulli(frac)."""
    floor = np.floor(values)
    return (floor + (rng.random(values.shape) < values - floor)).astype(np.int64)


def skellam(size: int, variance: float, rng: np.random.Generator) -> NDArray[np.int64]:
    """``size`` draws of Poisson(variance / 2) - Poisson(variance / 2): integer noise of mean 0 and ``variance``."""
    mu = variance / 2
    return rng.poisson(mu, size).astype(np.int64) - rng.poisson(mu, size).astype(np.int64)


def noisy_words(flat: NDArray[np.float64], gamma: float, variance: float,
                rng: np.random.Generator) -> NDArray[np.uint32]:
    """A site's masked-input payload: rround(flat / gamma) + Skellam(variance), as two's-complement uint32 words.

    ``PrivacyError`` if a value is not finite or a coordinate falls outside int32 (gamma was sized for this site's
    bound, so that means a bug or a bad input, not bad luck).
    """
    if not np.all(np.isfinite(flat)):
        raise PrivacyError("distributed DP: the gradient sum holds non-finite values")
    integers = randomized_round(flat / gamma, rng) + skellam(flat.size, variance, rng)
    if integers.size and np.max(np.abs(integers)) >= INT32_LIMIT:
        raise PrivacyError("distributed DP: a noisy coordinate left the int32 range; gamma is too small")
    return integers.astype(np.uint32)  # int64 -> uint32 keeps the low 32 bits: two's complement modulo 2**32


def flatten(arrays: Mapping[str, NDArray[np.floating]]) -> NDArray[np.float64]:
    """The arrays' values in order as one float64 vector (the order of ``layout_of``)."""
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays.values()])


def check_noisy_sum(summed: NDArray[np.uint32], noise: DistributedNoise, survivor_weight: int, survivors: int,
                    num_sites: int, gamma: float) -> None:
    """``PrivacyError`` unless the unmasked sum (int32 units) is as long as `survivors` sites' inputs can make it.

    A site's clipped gradient sum has L2 norm at most (its training patients) * C, so the survivors' sum has norm
    at most ``survivor_weight`` * C / gamma; each site's rounding adds less than 1 per coordinate, and the summed
    Skellam shares (standard deviation ``sd`` per coordinate, near-Gaussian at these variances) have norm at most
    sd * (sqrt(d) + 12) but with probability below 1e-31. A site whose masked words were not its noisy sum (random
    words, a sum scaled past its clipping bound, a wrapped-around int32) makes the sum longer than that with
    near certainty, so the sum is refused: nothing is applied, though the site cannot be told from the sum.
    """
    values = summed.view(np.int32).astype(np.float64)
    dims = math.sqrt(values.size)
    noise_sd = math.sqrt(survivors * noise.share_variance(num_sites, gamma))
    reach = survivor_weight * noise.max_grad_norm / gamma + noise_sd * (dims + NOISE_TAIL_STDS) + survivors * dims
    norm = float(np.linalg.norm(values))
    if not norm <= reach:
        raise PrivacyError(f"distributed DP: the unmasked sum has L2 norm {norm * gamma:.4g}, more than the "
                           f"{reach * gamma:.4g} that {survivors} sites' clipped gradient sums ({survivor_weight} "
                           f"training patients, max-grad-norm {noise.max_grad_norm}) plus their noise can reach (a "
                           f"site sent masked words that were not its noisy sum); the sum is not used")


def summed_arrays(summed: NDArray[np.uint32], layout: Layout, gamma: float) -> dict[str, NDArray[np.float64]]:
    """The unmasked sum of the sites' words, read as int32 and times gamma, as arrays by ``layout``."""
    flat = summed.view(np.int32).astype(np.float64) * gamma
    arrays: dict[str, NDArray[np.float64]] = {}
    start = 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        arrays[name] = flat[start : start + size].reshape(shape)
        start += size
    return arrays
