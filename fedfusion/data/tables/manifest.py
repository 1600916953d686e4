"""A site's manifest: which slides and which sample of each omics layer belong to each patient.

``manifest.csv`` has a ``patient_id`` column, optionally ``slides`` (';'-separated paths relative to the site
directory, or absolute) and one column per schema omics layer naming the patient's sample in that layer's table
(``sample-column`` in the schema, e.g. ``omics_sample``). A study with a ``[radiology]`` section adds its volume
column (default ``radiology``: ';'-separated DICOM series folders or NIfTI files) and mask column (default
``radiology_mask``: one NIfTI label map per volume, same order, or empty). Every column but ``patient_id`` may be
empty or absent.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedfusion.data.findings import Findings
from fedfusion.data.tables.table_files import check_columns, read_text_table
from fedfusion.study.schema import StudySchema

MANIFEST_FILE = "manifest.csv"


@dataclass(frozen=True)
class ManifestEntry:
    """One patient's data files."""

    patient_id: str
    slides: tuple[Path, ...] = ()
    samples: dict[str, str] = field(default_factory=dict)
    """Sample name per omics layer name (layers the patient lacks are absent)."""
    volumes: tuple[Path, ...] = ()
    """Radiology volumes: DICOM series folders or NIfTI files."""
    masks: tuple[Path | None, ...] = ()
    """The tumour mask of each volume (same order; None where a volume has none)."""


def parse_manifest(path: Path, findings: Findings, schema: StudySchema) -> list[ManifestEntry]:
    """The manifest's valid entries (first of duplicates kept); every problem is recorded in ``findings``."""
    where = f"manifest {path}"
    table = read_text_table(path, where, findings)
    radiology = schema.radiology
    optional = ("slides", *(layer.sample_column for layer in schema.omics),
                *((radiology.volume_column, radiology.mask_column) if radiology is not None else ()))
    if table is None or not check_columns(table, where, findings, ("patient_id",), optional):
        return []
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for line, record in enumerate(table.to_dict("records"), start=2):
        pid = str(record["patient_id"]).strip()
        if not pid:
            findings.error(where, f"line {line} has an empty patient_id")
            continue
        if pid in seen:
            findings.error(where, f"patient {pid} is listed more than once")
            continue
        seen.add(pid)
        slides = tuple(path.parent / s.strip() for s in str(record.get("slides", "")).split(";") if s.strip())
        samples = {layer.name: str(record.get(layer.sample_column, "")).strip() for layer in schema.omics}
        volumes, masks = (_volumes(path.parent, record, radiology.volume_column, radiology.mask_column, pid, where,
                                   findings) if radiology is not None else ((), ()))
        entries.append(ManifestEntry(pid, slides, {name: sample for name, sample in samples.items() if sample},
                                     volumes, masks))
    return entries


def _volumes(base: Path, record: Mapping[Hashable, object], volume_column: str, mask_column: str, pid: str, where: str,
             findings: Findings) -> tuple[tuple[Path, ...], tuple[Path | None, ...]]:
    """A patient's volumes and their masks (the mask list must be empty or as long as the volume list)."""
    volumes = [v.strip() for v in str(record.get(volume_column, "")).split(";") if v.strip()]
    masks = [m.strip() for m in str(record.get(mask_column, "")).split(";")]
    masks = [] if not any(masks) else masks
    if masks and len(masks) != len(volumes):
        findings.error(where, f"patient {pid} lists {len(volumes)} volumes in '{volume_column}' but {len(masks)} "
                              f"masks in '{mask_column}' (one per volume, or none)")
        return (), ()
    return (tuple(base / v for v in volumes),
            tuple(base / m if m else None for m in masks) if masks else tuple(None for _ in volumes))
