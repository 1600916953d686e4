"""A site's three tables read together and cross-checked: manifest, clinical table and expression table.

Problems go into a ``Findings`` (errors and warnings naming file and patient), so the cohort loader can raise
them and ``fedfusion site check`` can list them all. Patients in clinical.csv but not in manifest.csv are kept
without slides or omics (a warning); patients in manifest.csv without a clinical row are an error (no labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.clinical import STUDY_SUBTYPES, ClinicalRow, parse_clinical
from fedfusion.data.findings import MAX_PROBLEMS_LISTED, Findings
from fedfusion.data.manifest import ManifestEntry, parse_manifest
from fedfusion.data.omics import PanelExpression, parse_expression

EXPRESSION_FILES = ("expression_tpm.csv", "expression_tpm.tsv", "expression_tpm.csv.gz", "expression_tpm.tsv.gz")


@dataclass(frozen=True)
class SiteTables:
    """The usable content of a site's tables."""

    entries: list[ManifestEntry]
    """One per patient: manifest order, then clinical-only patients (no slides, no omics)."""
    clinical: dict[str, ClinicalRow]
    """Clinical row by patient id (a manifest patient without one is recorded as an error)."""
    omics: PanelExpression | None
    """The expression table on the gene panel; None when no patient names an omics sample (or it is unusable)."""


def read_site_tables(site_dir: Path, gene_panel: Sequence[str], findings: Findings,
                     subtypes: Sequence[str] = STUDY_SUBTYPES) -> SiteTables:
    """Read and cross-check the tables of ``site_dir``; every problem is recorded in ``findings``."""
    where = f"site {site_dir.name}"
    manifest = parse_manifest(site_dir / "manifest.csv", findings)
    rows = parse_clinical(site_dir / "clinical.csv", findings, subtypes)
    by_id = {row.patient_id: row for row in rows}
    unknown = [e.patient_id for e in manifest if e.patient_id not in by_id]
    if unknown and rows:
        findings.error(where, f"patients {unknown[:MAX_PROBLEMS_LISTED]} are in manifest.csv but have no row in "
                              f"{site_dir / 'clinical.csv'}" + _more(unknown))
    listed = {e.patient_id for e in manifest}
    unlisted = [pid for pid in by_id if pid not in listed]
    if unlisted and manifest:
        findings.warning(where, f"{len(unlisted)} patients in clinical.csv are not in manifest.csv; kept without "
                                f"slides or omics: {unlisted[:MAX_PROBLEMS_LISTED]}")
    entries = manifest + [ManifestEntry(pid, (), None) for pid in unlisted]
    return SiteTables(entries=entries, clinical=by_id, omics=_read_omics(site_dir, entries, gene_panel, findings))


def _read_omics(site_dir: Path, entries: list[ManifestEntry], gene_panel: Sequence[str],
                findings: Findings) -> PanelExpression | None:
    """The site's expression table on the panel, after checking every named sample is one of its columns."""
    if not any(e.omics_sample for e in entries):
        return None
    path = next((site_dir / n for n in EXPRESSION_FILES if (site_dir / n).is_file()), None)
    if path is None:
        findings.error(f"site {site_dir.name}", f"manifest.csv names omics samples but there is no expression "
                                                f"table (looked for {list(EXPRESSION_FILES)} in {site_dir})")
        return None
    omics = parse_expression(path, gene_panel, findings)
    if omics is not None:
        for entry in entries:
            if entry.omics_sample and entry.omics_sample not in omics.values.columns:
                findings.error(f"expression table {path}", f"no sample column '{entry.omics_sample}' (omics sample "
                                                           f"of patient {entry.patient_id})")
    return omics


def _more(items: list[str]) -> str:
    return f" (and {len(items) - MAX_PROBLEMS_LISTED} more)" if len(items) > MAX_PROBLEMS_LISTED else ""
