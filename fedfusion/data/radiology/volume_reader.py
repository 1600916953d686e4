"""Read a radiology volume (a DICOM series folder or a NIfTI file) and its tumour mask as SimpleITK images.

A DICOM series is checked first (``series_check``: modality and geometry tags only) and read in that slice order by
SimpleITK, which applies the rescale slope and intercept (CT in Hounsfield units); its metadata dictionaries are not
loaded. A NIfTI volume carries no modality, so the study's is assumed. A mask is a NIfTI label map (any value > 0
is tumour) on exactly the volume's voxel grid: same size, spacing, origin and direction, or a ``VolumeError``
naming both files. Everything is read in SimpleITK's physical (LPS) frame, so a NIfTI mask written in RAS by
nibabel lines up with a DICOM volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fedfusion.data.radiology.series_check import check_series
from fedfusion.errors import VolumeError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GRID_TOLERANCE_MM = 0.01
"""Origin and spacing differences (mm) below this still count as the same voxel grid."""


def is_nifti(path: Path) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` file name."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_volume(path: Path, modality: str) -> sitk.Image:
    """The volume at ``path`` (DICOM series folder or NIfTI file) as a 3-D float32 image; ``VolumeError`` naming it."""
    path = Path(path)
    if is_nifti(path):
        image = _read_nifti(path, "volume")
    else:
        geometry = check_series(path, modality)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in geometry.files])
        reader.MetaDataDictionaryArrayUpdateOff()
        reader.LoadPrivateTagsOff()
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeError(f"DICOM series {path}: its pixel data cannot be read") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"volume {path}: not a 3-D single-channel image")
    return sitk.Cast(image, sitk.sitkFloat32)


def read_mask(path: Path, volume: sitk.Image, volume_path: Path) -> sitk.Image:
    """The tumour mask at ``path`` as a 0/1 uint8 image on ``volume``'s grid; ``VolumeError`` when it is unreadable,
    not aligned with ``volume_path`` or empty."""
    path = Path(path)
    if not is_nifti(path):
        raise VolumeError(f"mask {path}: masks are NIfTI label maps (.nii or .nii.gz)")
    mask = _read_nifti(path, "mask")
    problem = grid_mismatch(mask, volume)
    if problem:
        raise VolumeError(f"mask {path} is not aligned with its volume {volume_path}: {problem}")
    binary = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(binary)):
        raise VolumeError(f"mask {path} of volume {volume_path} marks no voxel")
    return binary


def grid_mismatch(mask: sitk.Image, volume: sitk.Image) -> str:
    """How ``mask``'s voxel grid differs from ``volume``'s (empty when they are the same)."""
    if mask.GetSize() != volume.GetSize():
        return f"size {mask.GetSize()} vs {volume.GetSize()}"
    if not np.allclose(mask.GetSpacing(), volume.GetSpacing(), atol=GRID_TOLERANCE_MM):
        return f"spacing {_mm(mask.GetSpacing())} vs {_mm(volume.GetSpacing())} mm"
    if not np.allclose(mask.GetOrigin(), volume.GetOrigin(), atol=GRID_TOLERANCE_MM):
        return f"origin {_mm(mask.GetOrigin())} vs {_mm(volume.GetOrigin())} mm"
    if not np.allclose(mask.GetDirection(), volume.GetDirection(), atol=1e-4):
        return "orientation differs"
    return ""


def _read_nifti(path: Path, what: str) -> sitk.Image:
    if not path.is_file():
        raise VolumeError(f"{what} {path}: file does not exist")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeError(f"{what} {path}: not a readable NIfTI image") from exc


def _mm(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"
