"""A site's tables read together and cross-checked: manifest, clinical table and the omics tables.

Problems go into a ``Findings`` (errors and warnings naming file and patient), so the cohort loader can raise
them and ``fedfusion site check`` can list them all. Patients in clinical.csv but not in manifest.csv are kept
without slides or omics (a warning); patients in manifest.csv without a clinical row are an error (no labels),
or with ``skip_bad`` a warning and those patients are left out. The omics tables are the RNA-seq expression
table and, when the manifest names copy-number samples and the study gives a copy-number gene list, the
copy-number table (``table_sources`` finds them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.findings import MAX_PROBLEMS_LISTED, Findings
from fedfusion.data.tables.clinical import ClinicalRow, parse_clinical
from fedfusion.data.tables.copy_number import parse_copy_number
from fedfusion.data.tables.manifest import ManifestEntry, parse_manifest
from fedfusion.data.tables.omics import parse_expression
from fedfusion.data.tables.panel_matrix import PanelMatrix
from fedfusion.data.tables.table_sources import TableSource, resolve_table_sources
from fedfusion.study.config import STUDY_SUBTYPES


@dataclass(frozen=True)
class SiteTables:
    """The usable content of a site's tables."""

    entries: list[ManifestEntry]
    """One per patient: manifest order, then clinical-only patients (no slides, no omics)."""
    clinical: dict[str, ClinicalRow]
    """Clinical row by patient id (a manifest patient without one is recorded as an error)."""
    omics: PanelMatrix | None
    """The expression table on the gene panel; None when no patient names an omics sample (or it is unusable)."""
    copy_number: PanelMatrix | None = None
    """The copy-number table on the copy-number panel; None when no patient names a copy-number sample."""


def read_site_tables(site_dir: Path, gene_panel: Sequence[str], findings: Findings,
                     subtypes: Sequence[str] = STUDY_SUBTYPES, *, cnv_panel: Sequence[str] | None = None,
                     skip_bad: bool = False) -> SiteTables:
    """Read and cross-check the tables of ``site_dir``; every problem is recorded in ``findings``."""
    where = f"site {site_dir.name}"
    manifest = parse_manifest(site_dir / "manifest.csv", findings)
    rows = parse_clinical(site_dir / "clinical.csv", findings, subtypes)
    by_id = {row.patient_id: row for row in rows}
    unknown = [e.patient_id for e in manifest if e.patient_id not in by_id]
    if unknown and rows:
        problem = (f"patients {unknown[:MAX_PROBLEMS_LISTED]} are in manifest.csv but have no row in "
                   f"{site_dir / 'clinical.csv'}" + _more(unknown))
        if skip_bad:
            findings.warning(where, problem + "; skipped (no survival labels)")
            manifest = [e for e in manifest if e.patient_id in by_id]
        else:
            findings.error(where, problem)
    listed = {e.patient_id for e in manifest}
    unlisted = [pid for pid in by_id if pid not in listed]
    if unlisted and manifest:
        findings.warning(where, f"{len(unlisted)} patients in clinical.csv are not in manifest.csv; kept without "
                                f"slides or omics: {unlisted[:MAX_PROBLEMS_LISTED]}")
    entries = manifest + [ManifestEntry(pid, (), None) for pid in unlisted]
    sources = resolve_table_sources(site_dir, findings)
    omics = _read_layer(site_dir, sources.expression, {e.patient_id: e.omics_sample for e in entries},
                        "omics samples", "expression table", findings,
                        lambda path: parse_expression(path, gene_panel, findings, sources.expression.units))
    copy_number = None
    cnv_samples = {e.patient_id: e.cnv_sample for e in entries}
    if any(cnv_samples.values()) and cnv_panel is None:
        findings.warning(where, "manifest.csv names copy-number samples (cnv_sample) but no copy-number gene "
                                "list was given: the copy-number layer is not used")
    elif cnv_panel is not None:
        copy_number = _read_layer(site_dir, sources.copy_number, cnv_samples, "copy-number samples",
                                  "copy-number table", findings,
                                  lambda path: parse_copy_number(path, cnv_panel, findings))
    return SiteTables(entries=entries, clinical=by_id, omics=omics, copy_number=copy_number)


def _read_layer(site_dir: Path, source: TableSource, samples: dict[str, str | None], what: str, table: str,
                findings: Findings, parse: Callable[[Path], PanelMatrix | None]) -> PanelMatrix | None:
    """One omics layer's table, after checking every sample the manifest names is one of its columns."""
    if not any(samples.values()):
        return None
    if source.path is None:
        findings.error(f"site {site_dir.name}", f"manifest.csv names {what} but there is no {table} "
                                                f"(looked for {source.looked_for})")
        return None
    layer = parse(source.path)
    if layer is not None:
        for patient_id, sample in samples.items():
            if sample and sample not in layer.values.columns:
                findings.error(layer.where, layer.missing_sample(sample, patient_id))
    return layer


def _more(items: list[str]) -> str:
    return f" (and {len(items) - MAX_PROBLEMS_LISTED} more)" if len(items) > MAX_PROBLEMS_LISTED else ""
