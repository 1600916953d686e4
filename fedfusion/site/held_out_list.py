"""The site's list of its held-out patients for a study, kept at the site beside its privacy ledger.

Results are only comparable with other work on the same patients when the held-out patients are known. Patient
ids never leave a site, so each site writes its own list (``<ledger-dir>/held-out/<study-id>.csv``: patient_id and
split, the test and validation patients) when it first reads its cohort for a study; in a simulation the ledger
folders are inside the results folder, so the simulation's results list every site's held-out patients.
"""

from __future__ import annotations

from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.patient_records import SiteCohort

HELD_OUT_DIR = "held-out"


def held_out_path(ledger_dir: Path, study_id: str) -> Path:
    """Where the site keeps its held-out list of ``study_id``."""
    return ledger_dir / HELD_OUT_DIR / f"{study_id}.csv"


def write_held_out_list(ledger_dir: Path, study_id: str, cohort: SiteCohort) -> Path:
    """Write (atomically; unchanged content is not rewritten) the cohort's test and validation patient ids."""
    rows = [f"{p.patient_id},test" for p in cohort.test] + [f"{p.patient_id},validation" for p in cohort.validation]
    text = "\n".join(["patient_id,split", *rows]) + "\n"
    path = held_out_path(ledger_dir, study_id)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path
