"""Radiomics features of a volume's tumour region, as the study declares them, computed with SimpleITK.

pyradiomics 3.1.0 does not install with the pinned stack (its source release declares version 3.0.1a1 and has no
wheel for Python 3.11 with numpy 2.4), so the features come from SimpleITK's maintained filters: label shape
statistics (volume, equivalent radius, surface, elongation, flatness, roundness), label intensity statistics
(mean, sd, median, skewness, kurtosis, minimum, maximum) and three texture maps summarised inside the mask
(gradient magnitude, local standard deviation in a 3x3x3 neighbourhood, Laplacian of Gaussian at one voxel).

Steps per volume: crop (the mask's bounding box plus the study's margin, or the whole volume), resample to the
study's voxel spacing (linear for intensities, nearest neighbour for the mask), normalise intensities (CT: clip to
the study's Hounsfield window and map it onto [0, 1]; MR/PT: z-score over this volume's cropped region, never with
statistics over the site's patients), then the features. ``scale_features`` applies the study-fixed per-feature
scaling; the cache keeps the unscaled values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from fedfusion.errors import VolumeError
from fedfusion.study.schema import RadiologySpec

TUMOUR = 1


def volume_features(image: sitk.Image, mask: sitk.Image | None, spec: RadiologySpec,
                    where: str) -> npt.NDArray[np.float32]:
    """The unscaled features of ``spec.features`` (in order) of ``image`` inside ``mask`` (the whole volume when
    None); ``where`` names the volume in a ``VolumeError``."""
    image, mask = normalised_region(image, mask, spec, where)
    values = _FeatureMaps(image, mask)
    return np.asarray([values.get(f.name) for f in spec.features], dtype=np.float32)


def normalised_region(image: sitk.Image, mask: sitk.Image | None, spec: RadiologySpec,
                      where: str) -> tuple[sitk.Image, sitk.Image]:
    """The study's crop of ``image`` and its mask (all ones when None), resampled to the study's spacing, the
    intensities normalised; ``VolumeError`` naming ``where`` when the mask is needed and absent, or vanishes."""
    if mask is None:
        if spec.crop == "mask":
            raise VolumeError(f"{where}: the study crops around the tumour mask but the volume has none")
        mask = sitk.Cast(image * 0 + 1, sitk.sitkUInt8)
    if spec.crop == "mask":
        image, mask = _crop_to_mask(image, mask, spec.margin)
    image = _resample(image, spec.spacing, sitk.sitkLinear)
    mask = _resample(mask, spec.spacing, sitk.sitkNearestNeighbor)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise VolumeError(f"{where}: the tumour mask covers no voxel at the study's spacing {list(spec.spacing)} mm")
    return _normalise(image, spec), mask


def scale_features(raw: npt.NDArray[np.float32], spec: RadiologySpec) -> npt.NDArray[np.float32]:
    """Model input of one volume: each feature (log(x + 1) first where the study says) minus its centre, divided by
    its scale, all study-fixed."""
    out = np.empty(len(spec.features), dtype=np.float32)
    for i, (value, feature) in enumerate(zip(raw, spec.features, strict=True)):
        x = math.log1p(max(float(value), 0.0)) if feature.log else float(value)
        out[i] = (x - feature.center) / feature.scale
    return out


def _crop_to_mask(image: sitk.Image, mask: sitk.Image, margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(mask)
    box = shape.GetBoundingBox(TUMOUR)
    start, size = box[:3], box[3:]
    pad = [math.ceil(margin_mm / s) for s in image.GetSpacing()]
    low = [max(0, b - p) for b, p in zip(start, pad, strict=True)]
    high = [min(n, b + s + p) for b, s, p, n in zip(start, size, pad, image.GetSize(), strict=True)]
    extent = [h - lo for lo, h in zip(low, high, strict=True)]
    return sitk.RegionOfInterest(image, extent, low), sitk.RegionOfInterest(mask, extent, low)


def _resample(image: sitk.Image, spacing: tuple[float, float, float], interpolator: int) -> sitk.Image:
    old_size, old_spacing = image.GetSize(), image.GetSpacing()
    size = [max(1, round(n * s / t)) for n, s, t in zip(old_size, old_spacing, spacing, strict=True)]
    fill = float(np.min(sitk.GetArrayViewFromImage(image)))
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing,
                         image.GetDirection(), fill, image.GetPixelID())


def _normalise(image: sitk.Image, spec: RadiologySpec) -> sitk.Image:
    if spec.modality == "CT":
        low, high = spec.window
        clipped = sitk.Clamp(image, sitk.sitkFloat32, low, high)
        return sitk.Cast((clipped - low) / (high - low), sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    sd = float(values.std())
    return sitk.Cast((image - float(values.mean())) / (sd if sd > 0 else 1.0), sitk.sitkFloat32)


class _FeatureMaps:
    """Computes each filter once, only when a listed feature needs it."""

    def __init__(self, image: sitk.Image, mask: sitk.Image) -> None:
        self.image, self.mask = image, mask
        self._shape: sitk.LabelShapeStatisticsImageFilter | None = None
        self._stats: dict[str, sitk.LabelIntensityStatisticsImageFilter] = {}

    def get(self, name: str) -> float:
        group, item = name.split(":")
        getters: dict[str, Callable[[], float]] = {
            "shape:volume-ml": lambda: self.shape().GetPhysicalSize(TUMOUR) / 1000.0,
            "shape:equivalent-radius-mm": lambda: self.shape().GetEquivalentSphericalRadius(TUMOUR),
            "shape:surface-mm2": lambda: self.shape().GetPerimeter(TUMOUR),
            "shape:elongation": lambda: self.shape().GetElongation(TUMOUR),
            "shape:flatness": lambda: self.shape().GetFlatness(TUMOUR),
            "shape:roundness": lambda: self.shape().GetRoundness(TUMOUR),
            "intensity:mean": lambda: self.stats("image").GetMean(TUMOUR),
            "intensity:sd": lambda: self.stats("image").GetStandardDeviation(TUMOUR),
            "intensity:median": lambda: self.stats("image").GetMedian(TUMOUR),
            "intensity:skewness": lambda: self.stats("image").GetSkewness(TUMOUR),
            "intensity:kurtosis": lambda: self.stats("image").GetKurtosis(TUMOUR),
            "intensity:minimum": lambda: self.stats("image").GetMinimum(TUMOUR),
            "intensity:maximum": lambda: self.stats("image").GetMaximum(TUMOUR),
            "texture:gradient-mean": lambda: self.stats("gradient").GetMean(TUMOUR),
            "texture:local-sd-mean": lambda: self.stats("local-sd").GetMean(TUMOUR),
            "texture:log-mean": lambda: self.stats("log").GetMean(TUMOUR),
            "texture:log-sd": lambda: self.stats("log").GetStandardDeviation(TUMOUR),
        }
        value = float(getters[f"{group}:{item}"]())
        return value if math.isfinite(value) else 0.0

    def shape(self) -> sitk.LabelShapeStatisticsImageFilter:
        if self._shape is None:
            self._shape = sitk.LabelShapeStatisticsImageFilter()
            self._shape.ComputePerimeterOn()
            self._shape.Execute(self.mask)
        return self._shape

    def stats(self, source: str) -> sitk.LabelIntensityStatisticsImageFilter:
        if source not in self._stats:
            maps: dict[str, Callable[[], sitk.Image]] = {
                "image": lambda: self.image,
                "gradient": lambda: sitk.GradientMagnitude(self.image),
                "local-sd": lambda: sitk.Noise(self.image, [1, 1, 1]),
                "log": lambda: sitk.LaplacianRecursiveGaussian(self.image, max(self.image.GetSpacing())),
            }
            stats = sitk.LabelIntensityStatisticsImageFilter()
            stats.Execute(self.mask, sitk.Cast(maps[source](), sitk.sitkFloat32))
            self._stats[source] = stats
        return self._stats[source]
