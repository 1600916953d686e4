"""Validate one DICOM series folder from its headers' geometry and modality tags, and order its slices.

Only the tags below are read from each file (``pydicom.dcmread(specific_tags=...)``, pixels not loaded): nothing
else of a header (names, dates, identifiers) is ever parsed, kept or logged. A series must hold at least two
readable slices of the study's modality with one orientation, one pixel spacing and one image size, evenly spaced
along the slice normal: a gap of more than 1.5 slice spacings is reported as missing slices, uneven spacing and
repeated positions as inconsistent spacing. Every problem is a ``VolumeError`` naming the folder and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.errors import InvalidDicomError

from fedfusion.errors import VolumeError

GEOMETRY_TAGS = ("Modality", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
"""The only header tags read: the scan's modality and its geometry."""
GAP_FACTOR = 1.5
"""A step between neighbouring slices larger than this many slice spacings means slices are missing."""
SPACING_TOLERANCE = 0.05
"""Relative deviation of a slice step from the series' spacing still taken as even."""
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SeriesGeometry:
    """A checked series: its slice files in order along the slice normal, and its geometry."""

    files: tuple[Path, ...]
    slice_spacing: float
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]


def check_series(folder: Path, modality: str) -> SeriesGeometry:
    """The series in ``folder`` checked for ``modality`` (``CT``, ``MR``, ``PT``), its slices ordered; raises
    ``VolumeError`` naming the folder and file of the first problem."""
    folder = Path(folder)
    where = f"DICOM series {folder}"
    if not folder.is_dir():
        raise VolumeError(f"{where}: folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) < 2:
        raise VolumeError(f"{where}: holds {len(files)} files, a series needs at least 2 slices")
    headers = [_header(path, where) for path in files]
    first_file, first = files[0], headers[0]
    for path, header in zip(files, headers, strict=True):
        if header.modality != modality:
            raise VolumeError(f"{where}: file {path.name} has modality {header.modality or '(none)'}, the study "
                              f"reads {modality}")
        if np.abs(header.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise VolumeError(f"{where}: inconsistent orientation: file {path.name} differs from {first_file.name}")
        if header.size != first.size or not np.allclose(header.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise VolumeError(f"{where}: inconsistent pixel spacing or image size: file {path.name} "
                              f"({header.pixel_spacing[0]:g} x {header.pixel_spacing[1]:g} mm, {header.size[0]} x "
                              f"{header.size[1]}) differs from {first_file.name}")
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    depth = np.array([float(np.dot(h.position, normal)) for h in headers])
    order = np.argsort(depth, kind="stable")
    steps = np.diff(depth[order])
    spacing = float(np.median(steps))
    for k, step in enumerate(steps):
        a, b = files[order[k]].name, files[order[k + 1]].name
        if step <= SPACING_TOLERANCE * max(spacing, 1e-6):
            raise VolumeError(f"{where}: inconsistent spacing: files {a} and {b} lie at the same position")
        if step > GAP_FACTOR * spacing:
            raise VolumeError(f"{where}: missing slices between files {a} and {b} ({step:g} mm apart, slice "
                              f"spacing {spacing:g} mm)")
        if abs(step - spacing) > SPACING_TOLERANCE * spacing:
            raise VolumeError(f"{where}: inconsistent spacing: files {a} and {b} are {step:g} mm apart, the "
                              f"series' slice spacing is {spacing:g} mm")
    return SeriesGeometry(files=tuple(files[i] for i in order), slice_spacing=spacing,
                          pixel_spacing=(float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
                          size=first.size)


@dataclass(frozen=True)
class _Header:
    modality: str
    position: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]
    pixel_spacing: npt.NDArray[np.float64]
    size: tuple[int, int]


def _header(path: Path, where: str) -> _Header:
    """The geometry and modality tags of one file (nothing else is parsed)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(GEOMETRY_TAGS))
        missing = [tag for tag in GEOMETRY_TAGS[1:] if tag not in ds]
        if missing:
            raise VolumeError(f"{where}: file {path.name} lacks the geometry tags {missing}")
        return _Header(modality=str(ds.get("Modality", "")).strip().upper(),
                       position=np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64),
                       orientation=np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64),
                       pixel_spacing=np.asarray([float(v) for v in ds.PixelSpacing], dtype=np.float64),
                       size=(int(ds.Rows), int(ds.Columns)))
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError) as exc:
        raise VolumeError(f"{where}: file {path.name} is not a readable DICOM image ({type(exc).__name__})") from exc
