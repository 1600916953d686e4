"""Synthetic CT scans: a planted tumour per patient, written as a DICOM series (pydicom) and a NIfTI mask (nibabel).

The tumour is an ellipsoid in soft tissue. Its size follows the patient's histological grade (``image_score``, the
slides' risk part): equivalent radius ``RADIUS_MM[0] + RADIUS_MM[1] * image_score``. Its texture follows the omics
risk module (``omics_score``): the amplitude of smooth heterogeneity inside it grows with the score. So a scan
carries the slides' risk and a noisy part of the omics risk. Sites differ as scanners do: in-plane pixel spacing,
slice thickness, white noise and a calibration offset in Hounsfield units (``ScannerProfile``). Each DICOM file
holds identifying header values (patient name, birth date, accession number, UIDs) as a PACS export would, so tests
can check that none of them ever leaves the site.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from fedfusion.atomic_io import TEMP_SUFFIX, atomic_write_bytes

FIELD_OF_VIEW_MM = 48.0
RADIUS_MM = (4.0, 9.0)
"""Equivalent tumour radius = a + b * image_score (mm)."""
TISSUE_HU, TUMOUR_HU = 40.0, 70.0
HETEROGENEITY_HU = (8.0, 40.0)
"""Amplitude of the tumour's smooth texture: a + b * sigmoid(omics_score)."""
SCAN_MISSING_RATE = 0.05
"""Chance that a patient has no CT scan."""
UID_ROOT = "1.2.826.0.1.3680043.10.1234."


@dataclass(frozen=True)
class ScannerProfile:
    """One site's CT scanner: geometry, noise and calibration."""

    pixel_mm: float
    slice_mm: float
    noise_hu: float
    offset_hu: float


def draw_scanner(rng: np.random.Generator) -> ScannerProfile:
    """A site's scanner, drawn from ``rng``."""
    return ScannerProfile(pixel_mm=float(rng.uniform(0.9, 1.3)), slice_mm=float(rng.choice([1.5, 2.0, 2.5])),
                          noise_hu=float(rng.uniform(6.0, 14.0)), offset_hu=float(rng.uniform(-15.0, 15.0)))


def render_ct(image_score: float, omics_score: float, scanner: ScannerProfile,
              rng: np.random.Generator) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    """A ``[slices, rows, columns]`` CT volume in HU (int16) and its tumour mask (uint8), on the scanner's grid."""
    n_xy = round(FIELD_OF_VIEW_MM / scanner.pixel_mm)
    n_z = round(FIELD_OF_VIEW_MM / scanner.slice_mm)
    z, y, x = np.meshgrid(*(np.arange(n) * s - n * s / 2 for n, s in
                            ((n_z, scanner.slice_mm), (n_xy, scanner.pixel_mm), (n_xy, scanner.pixel_mm))),
                          indexing="ij")
    radius = RADIUS_MM[0] + RADIUS_MM[1] * image_score
    axes = rng.uniform(0.8, 1.25, 3)
    axes = radius * axes / np.cbrt(np.prod(axes))
    centre = rng.uniform(-3.0, 3.0, 3)
    inside = ((z - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2 + ((x - centre[2]) / axes[2]) ** 2
    mask = (inside <= 1.0).astype(np.uint8)
    amplitude = HETEROGENEITY_HU[0] + HETEROGENEITY_HU[1] / (1.0 + np.exp(-omics_score))
    texture = _smooth_noise((n_z, n_xy, n_xy), rng) * amplitude
    hu = TISSUE_HU + scanner.offset_hu + mask * (TUMOUR_HU - TISSUE_HU + texture)
    hu += rng.normal(0.0, scanner.noise_hu, hu.shape)
    return np.clip(np.round(hu), -1024, 3000).astype(np.int16), mask


def write_ct_series(folder: Path, hu: npt.NDArray[np.int16], scanner: ScannerProfile, patient_id: str,
                    identity_seed: int) -> None:
    """Write ``hu`` as one DICOM CT file per slice into ``folder``, origin at (0, 0, 0), axial slices.

    The files are written into a temporary folder beside it, renamed to ``folder`` whole (a killed writer leaves no
    partial series under the final name; the generator's marker covers the debris).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=TEMP_SUFFIX, dir=folder.parent))
    staging.chmod(0o755)
    study_uid, series_uid, frame_uid = (generate_uid(UID_ROOT, [patient_id, str(identity_seed), part])
                                        for part in ("study", "series", "frame"))
    rng = np.random.default_rng(identity_seed)
    name = f"Synthetic^Patient{rng.integers(10**6):06d}"
    birth = f"19{rng.integers(30, 70)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    accession = f"ACC{rng.integers(10**8):08d}"
    for k, plane in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(UID_ROOT, [series_uid, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
        ds.AccessionNumber = accession
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, round(k * scanner.slice_mm, 4)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [round(scanner.pixel_mm, 4), round(scanner.pixel_mm, 4)]
        ds.SliceThickness = scanner.slice_mm
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        ds.save_as(staging / f"slice-{k + 1:04d}.dcm", enforce_file_format=True)
    os.replace(staging, folder)


def write_nifti_mask(path: Path, mask: npt.NDArray[np.uint8], scanner: ScannerProfile) -> None:
    """Write ``mask`` (``[slices, rows, columns]``) as a NIfTI label map on the series' grid (nibabel, RAS affine)."""
    affine = np.diag([-round(scanner.pixel_mm, 4), -round(scanner.pixel_mm, 4), scanner.slice_mm, 1.0])
    image = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)), affine)
    data = image.to_bytes()
    atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def _smooth_noise(shape: tuple[int, int, int], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Noise in about [-1, 1] varying over ~4 voxels (trilinear upsampling of a coarse grid)."""
    coarse = rng.uniform(-1.0, 1.0, tuple(max(2, n // 4) for n in shape))
    for axis, n in enumerate(shape):
        positions = np.linspace(0, coarse.shape[axis] - 1, n)
        low = np.floor(positions).astype(int)
        high = np.minimum(low + 1, coarse.shape[axis] - 1)
        weight = (positions - low).reshape([-1 if a == axis else 1 for a in range(3)])
        coarse = np.take(coarse, low, axis=axis) * (1 - weight) + np.take(coarse, high, axis=axis) * weight
    return coarse
