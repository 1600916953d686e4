"""A site's manifest: which slides and which sample of each omics layer belong to each patient.

``manifest.csv`` has a ``patient_id`` column, optionally ``slides`` (';'-separated paths relative to the site
directory, or absolute) and one column per schema omics layer naming the patient's sample in that layer's table
(``sample-column`` in the schema, e.g. ``omics_sample``). Every column but ``patient_id`` may be empty or absent.
"""

from __future__ import annotations

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


def parse_manifest(path: Path, findings: Findings, schema: StudySchema) -> list[ManifestEntry]:
    """The manifest's valid entries (first of duplicates kept); every problem is recorded in ``findings``."""
    where = f"manifest {path}"
    table = read_text_table(path, where, findings)
    optional = ("slides", *(layer.sample_column for layer in schema.omics))
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
        entries.append(ManifestEntry(pid, slides, {name: sample for name, sample in samples.items() if sample}))
    return entries
