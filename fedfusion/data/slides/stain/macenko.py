"""Macenko stain normalisation: estimate a slide's H&E stain vectors and rescale its stains to a fixed target.

Method (Macenko et al., 2009): pixels go to optical density ``OD = -ln((I + 1) / 256)``; tissue pixels (every
channel's OD at least ``OD_THRESHOLD``) span a plane whose two main directions come from an SVD of their OD;
the extreme angles in that plane (``ANGLE_PERCENTILE`` and its complement) are the haematoxylin and eosin
vectors. Each pixel's stain concentrations are solved against those vectors, scaled so that the slide's
99th-percentile concentrations become the study's ``TARGET_MAX_CONCENTRATIONS``, and recomposed with the study's
``TARGET_STAINS``. Target constants are fixed (the reference values of the usual Macenko implementations), never
computed from a site's data. Like Reinhard (``stain_normalization``), the statistics come from one slide and all
its tiles get the same transform; near-white background pixels are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TARGET_STAINS = np.array([[0.5626, 0.2159],
                          [0.7201, 0.8012],
                          [0.4062, 0.5581]], dtype=np.float32)
"""Columns: haematoxylin and eosin optical-density directions (RGB) of the study's reference H&E."""
TARGET_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308], dtype=np.float32)
"""99th-percentile haematoxylin and eosin concentrations of the reference."""
OD_THRESHOLD = 0.15
"""Pixels with an optical density below this in any channel are background for the stain estimate."""
ANGLE_PERCENTILE = 1.0
"""Robust extremes of the stain angles (percent)."""
CONCENTRATION_PERCENTILE = 99.0
MIN_TISSUE_PIXELS = 64
"""Fewer tissue pixels than this: the slide is left as it is (the estimate would be noise)."""
_OD_OF_LEVEL: npt.NDArray[np.float32] = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)
"""Optical density of each 8-bit intensity (a lookup instead of a per-pixel logarithm)."""


@dataclass(frozen=True)
class StainEstimate:
    """A slide's stain vectors and robust maximum concentrations."""

    stains: npt.NDArray[np.float32]
    """``[3, 2]`` unit OD vectors (columns: haematoxylin, eosin)."""
    max_concentrations: npt.NDArray[np.float32]
    """``[2]`` 99th-percentile concentrations."""


def optical_density(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """``[..., 3]`` uint8 RGB -> ``[..., 3]`` float32 optical density."""
    return _OD_OF_LEVEL[rgb]


def estimate_stains(tiles: Iterable[npt.NDArray[np.uint8]]) -> StainEstimate | None:
    """Stain vectors and maximum concentrations of the pooled tissue pixels of ``tiles``; None if too little tissue."""
    od = np.concatenate([optical_density(t).reshape(-1, 3) for t in tiles] or [np.empty((0, 3), np.float32)])
    tissue = od[np.all(od >= OD_THRESHOLD, axis=1)]
    if len(tissue) < MIN_TISSUE_PIXELS:
        return None
    # The two main directions of the tissue OD (uncentred, as in Macenko's method).
    _, _, vt = np.linalg.svd(tissue.astype(np.float64), full_matrices=False)
    plane = vt[:2].T
    plane *= np.sign(plane.sum(axis=0, keepdims=True) + 1e-12)  # point both directions into positive OD
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100.0 - ANGLE_PERCENTILE])
    v_low = plane @ np.array([np.cos(low), np.sin(low)])
    v_high = plane @ np.array([np.cos(high), np.sin(high)])
    # Haematoxylin is the bluer stain: more red-channel optical density than eosin.
    stains = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
    stains /= np.linalg.norm(stains, axis=0, keepdims=True)
    concentrations = np.linalg.lstsq(stains, tissue.T.astype(np.float64), rcond=None)[0]
    max_c = np.maximum(np.percentile(concentrations, CONCENTRATION_PERCENTILE, axis=1), 1e-3)
    return StainEstimate(stains=stains.astype(np.float32), max_concentrations=max_c.astype(np.float32))


def macenko_normalize(tile: npt.NDArray[np.uint8], source: StainEstimate) -> npt.NDArray[np.uint8]:
    """``tile`` (``[h, w, 3]`` uint8 RGB) recomposed with the target stains; background pixels unchanged."""
    od = optical_density(tile)
    unmix = np.linalg.pinv(source.stains)  # [2, 3]
    scale = TARGET_MAX_CONCENTRATIONS / source.max_concentrations
    mix = (TARGET_STAINS * scale[None, :]) @ unmix  # OD -> target OD in one 3x3 map
    target_od = od.reshape(-1, 3) @ mix.T.astype(np.float32)
    rgb = np.clip(256.0 * np.exp(-target_od) - 1.0, 0.0, 255.0).reshape(tile.shape)
    background = np.all(od < OD_THRESHOLD, axis=-1)
    return np.where(background[..., None], tile, (rgb + 0.5).astype(np.uint8))
