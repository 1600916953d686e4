"""Clip, scale by the site's weight share and quantize an update into uint32 words; turn the sum back into floats.

Site i with weight w_i (its patients) in a round whose sites weigh W in all scales its clipped update by its share
s_i = w_i / W and rounds z = s_i * clip(x) to the nearest level q = rint((z + c) * R / 2c) in [0, R] (the
deterministic form of Flower's `quantize`, vectorised in place). The survivors' levels add up to
S = sum_i q_i < N * R < 2**32, so S * 2c/R - n * c = sum_i z_i (n survivors) within n half-steps, and the
weighted average of the survivors' clipped updates is sum_i z_i / sum_i s_i: what plain weighted FedAvg gives,
within n / 2 * (2c/R) * W / W_survivors per value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from fedfusion.errors import ConfigError, PrivacyError
from fedfusion.secure_aggregation.config import SecAggConfig

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def layout_of(update: Mapping[str, NDArray[np.floating]]) -> Layout:
    """Names and shapes of an update's arrays, in order: what the coordinator needs to rebuild the average."""
    return tuple((name, tuple(np.shape(array))) for name, array in update.items())


def layout_json(layout: Layout) -> str:
    """The layout as JSON text, ``[[name, [dims]], ...]``: how it travels and what is signed."""
    return json.dumps([[name, list(shape)] for name, shape in layout])


def vector_length(layout: Layout) -> int:
    """Entries of the integer vector for `layout`: one per value."""
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout)


def check_weight(weight: object, site: str) -> int:
    """The weight as an int if it is a positive integer; ``ConfigError`` naming the site otherwise."""
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or weight < 1:
        raise ConfigError(f"site {site}: secure-aggregation weight must be a positive integer, got {weight!r}")
    return int(weight)


def scaled_quantized_vector(
    update: Mapping[str, NDArray[np.floating]], share: float, config: SecAggConfig, site: str
) -> NDArray[np.uint32]:
    """Return rint((share * clip(update) + c) * R / 2c) as one uint32 vector; refuse a non-finite value."""
    if not 0 < share <= 1:
        raise ConfigError(f"site {site}: secure-aggregation weight share must be in (0, 1], got {share}")
    levels = np.empty(vector_length(layout_of(update)), dtype=np.float64)
    start = 0
    for name, array in update.items():
        values = np.asarray(array).ravel()
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"site {site}: update '{name}' holds non-finite values")
        levels[start : start + values.size] = values
        start += values.size
    c = config.clipping_range
    np.clip(levels, -c, c, out=levels)
    levels *= share * config.levels / (2 * c)
    levels += config.levels / 2
    np.rint(levels, out=levels)
    return levels.astype(np.uint32)


def check_level_sum(summed: NDArray[np.uint32], config: SecAggConfig, num_inputs: int, share_sum: float) -> None:
    """``PrivacyError`` unless every value of the unmasked sum lies where `num_inputs` sites' levels can put it.

    A site's levels lie in R/2 +- s_i R/2 (within half a step), so the sum lies in n R/2 +- share_sum R/2 (within
    n halves). A masked input whose masks do not cancel (made for another round, or not masked as agreed) puts a
    value there only by chance (probability at most 1/n per value), so a sum outside is refused: nothing wrong is
    applied, though the site that caused it cannot be told from the sum alone.
    """
    centre = num_inputs * config.levels / 2
    reach = share_sum * config.levels / 2 + num_inputs
    outside = int(np.count_nonzero(np.abs(summed.astype(np.float64) - centre) > reach))
    if outside:
        raise PrivacyError(f"secure aggregation: {outside} of {summed.size} values of the unmasked sum lie outside "
                           f"what {num_inputs} sites' inputs allow (a masked input whose masks do not cancel); "
                           f"the sum is not used")


def weighted_average(
    summed: NDArray[np.uint32], layout: Layout, config: SecAggConfig, num_inputs: int, share_sum: float
) -> dict[str, NDArray[np.float64]]:
    """Turn the unmasked sum of `num_inputs` sites' levels, whose weight shares add up to `share_sum`, into the
    weighted average arrays."""
    if not share_sum > 0:
        raise ConfigError(f"secure aggregation: the survivors' weight share is {share_sum}, not positive")
    flat = summed.astype(np.float64)
    flat *= config.step / share_sum
    flat -= num_inputs * config.clipping_range / share_sum
    averages: dict[str, NDArray[np.float64]] = {}
    start = 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        averages[name] = flat[start : start + size].reshape(shape)
        start += size
    return averages
