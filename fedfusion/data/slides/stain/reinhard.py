"""Reinhard stain normalisation: match a slide's tissue colour statistics in CIE LAB to study-fixed targets.

Each LAB channel of the tissue pixels is shifted and scaled so that its mean and standard deviation become the
study's ``TARGET_LAB_MEAN`` / ``TARGET_LAB_STD`` (constants: never computed from a site's data); background
(near-white) pixels are left as they are. The source statistics are those of one slide (pooled over a few of its
tissue tiles), so all tiles of a slide get the same transform: stain differences between sites and scanners
go, differences between a slide's tiles (dark crowded nuclei vs pale stroma) stay. Like the per-sample omics
z-score, this uses no statistic over the site's patients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TARGET_LAB_MEAN = np.array([48.0, 29.0, -12.0], dtype=np.float32)
TARGET_LAB_STD = np.array([20.0, 13.0, 10.0], dtype=np.float32)
"""Study-fixed target: tissue L*, a*, b* statistics of a typical H&E slide (rounded from the tissue pixels
(L* <= TISSUE_MAX_L) of the public CMU-1-Small-Region.svs test slide)."""
TISSUE_MAX_L = 88.0
"""Pixels with L* above this are glass/background: they neither count in the statistics nor change."""
MIN_TISSUE_PIXELS = 64
"""Fewer tissue pixels than this: the slide is left as it is (statistics would be noise)."""

_WHITE_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], dtype=np.float32)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ).astype(np.float32)
_SRGB_TO_LINEAR = np.array([c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
                            for c in np.arange(256) / 255.0], dtype=np.float32)
_GAMMA_LEVELS = 16384
_LEVELS = np.arange(_GAMMA_LEVELS) / (_GAMMA_LEVELS - 1)
_LINEAR_TO_SRGB: npt.NDArray[np.uint8] = np.round(255.0 * np.where(_LEVELS <= 0.0031308, 12.92 * _LEVELS,
                                            1.055 * _LEVELS ** (1 / 2.4) - 0.055)).astype(np.uint8)
"""sRGB gamma encoding as a lookup table (finer than 0.3 output levels; a per-pixel power was the hot spot)."""
_EPSILON, _KAPPA = 216.0 / 24389.0, 24389.0 / 27.0


@dataclass(frozen=True)
class LabStats:
    """Per-channel mean and standard deviation of tissue pixels in CIE LAB (L*, a*, b*)."""

    mean: npt.NDArray[np.float32]
    std: npt.NDArray[np.float32]


def rgb_to_lab(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """``[..., 3]`` uint8 sRGB -> ``[..., 3]`` float32 CIE LAB (D65)."""
    xyz = (_SRGB_TO_LINEAR[rgb] @ _RGB_TO_XYZ.T) / _WHITE_D65
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16.0) / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1).astype(np.float32)


def lab_to_rgb(lab: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """``[..., 3]`` CIE LAB (D65) -> ``[..., 3]`` uint8 sRGB, out-of-gamut colours clipped."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    cube = f * f * f
    xyz = np.where(cube > _EPSILON, cube, (116.0 * f - 16.0) / _KAPPA) * _WHITE_D65
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    levels: npt.NDArray[np.intp] = (linear * (_GAMMA_LEVELS - 1) + 0.5).astype(np.intp)
    return _LINEAR_TO_SRGB[levels]


def tissue_lab_stats(tiles: Iterable[npt.NDArray[np.uint8]]) -> LabStats | None:
    """LAB statistics of the tissue pixels of ``tiles`` pooled, or None with too little tissue."""
    pixels = [lab[lab[..., 0] <= TISSUE_MAX_L] for lab in (rgb_to_lab(t) for t in tiles)]
    tissue = np.concatenate(pixels) if pixels else np.empty((0, 3), np.float32)
    if len(tissue) < MIN_TISSUE_PIXELS:
        return None
    return LabStats(mean=tissue.mean(axis=0), std=np.maximum(tissue.std(axis=0), 1e-3))


def reinhard_normalize(tile: npt.NDArray[np.uint8], source: LabStats) -> npt.NDArray[np.uint8]:
    """``tile`` (``[h, w, 3]`` uint8 RGB) with its tissue pixels moved from ``source`` to the study target."""
    lab = rgb_to_lab(tile)
    tissue = lab[..., 0] <= TISSUE_MAX_L
    scale = (TARGET_LAB_STD / source.std).astype(np.float32)
    moved = lab_to_rgb((lab - source.mean.astype(np.float32)) * scale + TARGET_LAB_MEAN)
    return np.where(tissue[..., None], moved, tile)
