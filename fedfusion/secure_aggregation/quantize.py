"""Clip, quantize and weight a site's update into one integer vector; turn the unmasked sum back into floats.

A value x is clipped to [-c, c] and rounded to the nearest level q in [0, R] (q = rint((x + c) * R / 2c), the
deterministic form of Flower's `quantize`, vectorised in place). The site sends w * q for its integer weight w,
plus w itself as the last entry, as uint64 words. The unmasked sum S = sum_i w_i q_i with W = sum_i w_i gives the
weighted average of the clipped values, sum_i w_i x_i / W ~= S / W * 2c/R - c (Flower's `dequantize` applied to
S / W), within half a quantization step 2c/R per value.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.common.secure_aggregation.quantization import dequantize
from numpy.typing import NDArray

from fedfusion.errors import ConfigError
from fedfusion.secure_aggregation.config import SecAggConfig

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def layout_of(update: Mapping[str, NDArray[np.floating]]) -> Layout:
    """Names and shapes of an update's arrays, in order: what the coordinator needs to rebuild the average."""
    return tuple((name, tuple(np.shape(array))) for name, array in update.items())


def vector_length(layout: Layout) -> int:
    """Entries of the integer vector for `layout`: all values plus one for the weight."""
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout) + 1


def weighted_quantized_vector(
    update: Mapping[str, NDArray[np.floating]], weight: int, config: SecAggConfig, site: str
) -> NDArray[np.uint64]:
    """Return [w * quantize(clip(update)), w] as one uint64 vector; refuse a bad weight or a non-finite value."""
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or not 1 <= weight <= config.max_weight:
        raise ConfigError(
            f"site {site}: secure-aggregation weight must be an integer in [1, {config.max_weight}], got {weight!r}"
        )
    levels = np.empty(vector_length(layout_of(update)), dtype=np.float64)
    start = 0
    for name, array in update.items():
        values = np.asarray(array).ravel()
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"site {site}: update '{name}' holds non-finite values")
        levels[start : start + values.size] = values
        start += values.size
    body = levels[:-1]
    np.clip(body, -config.clipping_range, config.clipping_range, out=body)
    body += config.clipping_range
    body *= config.quantization_range / (2 * config.clipping_range)
    np.rint(body, out=body)
    levels[-1] = 1.0
    vector = levels.astype(np.uint64)
    vector *= np.uint64(weight)
    return vector


def weighted_average(
    summed: NDArray[np.uint64], layout: Layout, config: SecAggConfig
) -> tuple[dict[str, NDArray[np.float64]], int]:
    """Turn the unmasked sum [sum w_i q_i, sum w_i] into the weighted average arrays and the total weight."""
    total_weight = int(summed[-1])
    if total_weight < 1:
        raise ConfigError(f"secure aggregation: the unmasked total weight is {total_weight}, not positive")
    mean_levels = summed[:-1].astype(np.float64) / total_weight
    (flat_average,) = dequantize([mean_levels], config.clipping_range, config.quantization_range)
    averages: dict[str, NDArray[np.float64]] = {}
    start = 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        averages[name] = flat_average[start : start + size].reshape(shape)
        start += size
    return averages, total_weight
