"""A site's manifest: which slides and which RNA-seq sample belong to each patient.

``manifest.csv`` has columns patient_id, slides (';'-separated paths relative to the site directory, or
absolute; may be empty) and omics_sample (a column name of the expression table; may be empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedfusion.errors import DataError

MANIFEST_COLUMNS = ("patient_id", "slides", "omics_sample")


@dataclass(frozen=True)
class ManifestEntry:
    """One patient's data files."""

    patient_id: str
    slides: tuple[Path, ...]
    omics_sample: str | None


def read_manifest(path: Path) -> list[ManifestEntry]:
    """Read ``path``; slide paths are resolved against its directory. ``DataError`` names file and patient."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"manifest {path}: file does not exist") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"manifest {path}: not a readable CSV ({exc})") from exc
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"manifest {path}: missing columns {missing} (has {list(table.columns)})")
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for line, record in enumerate(table.to_dict("records"), start=2):
        pid = record["patient_id"].strip()
        if not pid:
            raise DataError(f"manifest {path}: line {line} has an empty patient_id")
        if pid in seen:
            raise DataError(f"manifest {path}: patient {pid} is listed more than once")
        seen.add(pid)
        slides = tuple(path.parent / s.strip() for s in record["slides"].split(";") if s.strip())
        sample = record["omics_sample"].strip() or None
        entries.append(ManifestEntry(patient_id=pid, slides=slides, omics_sample=sample))
    return entries
