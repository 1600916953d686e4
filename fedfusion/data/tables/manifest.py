"""A site's manifest: which slides and which RNA-seq sample belong to each patient.

``manifest.csv`` has columns patient_id, slides (';'-separated paths relative to the site directory, or
absolute; may be empty), omics_sample (a column name of the expression table; may be empty) and, optionally,
cnv_sample (a column name of the copy-number table; may be empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.findings import Findings
from fedfusion.data.tables.table_files import check_columns, read_text_table

MANIFEST_COLUMNS = ("patient_id", "slides", "omics_sample")
OPTIONAL_COLUMNS = ("cnv_sample",)


@dataclass(frozen=True)
class ManifestEntry:
    """One patient's data files."""

    patient_id: str
    slides: tuple[Path, ...]
    omics_sample: str | None
    cnv_sample: str | None = None


def parse_manifest(path: Path, findings: Findings) -> list[ManifestEntry]:
    """The manifest's valid entries (first of duplicates kept); every problem is recorded in ``findings``."""
    where = f"manifest {path}"
    table = read_text_table(path, where, findings)
    if table is None or not check_columns(table, where, findings, MANIFEST_COLUMNS, OPTIONAL_COLUMNS):
        return []
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for line, record in enumerate(table.to_dict("records"), start=2):
        pid = record["patient_id"].strip()
        if not pid:
            findings.error(where, f"line {line} has an empty patient_id")
            continue
        if pid in seen:
            findings.error(where, f"patient {pid} is listed more than once")
            continue
        seen.add(pid)
        slides = tuple(path.parent / s.strip() for s in record["slides"].split(";") if s.strip())
        sample = record["omics_sample"].strip() or None
        cnv_sample = str(record.get("cnv_sample", "")).strip() or None
        entries.append(ManifestEntry(patient_id=pid, slides=slides, omics_sample=sample, cnv_sample=cnv_sample))
    return entries
