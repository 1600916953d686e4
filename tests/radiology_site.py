"""Helpers of the radiology tests: the study on a radiogenomic cohort, editing a DICOM file's tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from fedfusion.data.cohort_index import SCHEMA_FILE
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import load_schema

IDENTIFYING_TAGS = ("PatientName", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "FrameOfReferenceUID")


def radiology_study(cohort_dir: Path, **changes: Any) -> StudyConfig:
    """The default study on the cohort's (radiogenomic) schema."""
    return StudyConfig(schema=load_schema(cohort_dir / SCHEMA_FILE).to_json()).replace(**changes)


def set_tags(path: Path, **tags: Any) -> None:
    """Rewrite a DICOM file with some tags changed."""
    ds = pydicom.dcmread(path)
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(path)


def header_values(site_dir: Path) -> set[str]:
    """Every identifying header value (names, birth dates, accession numbers, UIDs) of a site's DICOM files."""
    values: set[str] = set()
    for path in sorted(site_dir.glob("radiology/*/ct/*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(ds.get(tag)) for tag in IDENTIFYING_TAGS}
    return values
