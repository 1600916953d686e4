"""A site's tables read together and cross-checked: manifest, clinical table and one table per omics layer.

Problems go into a ``Findings`` (errors and warnings naming file and patient), so the cohort loader can raise
them and ``fedfusion site check`` can list them all. Patients in clinical.csv but not in manifest.csv are kept
without slides or omics (a warning); patients in manifest.csv without a clinical row are an error (no labels),
or with ``skip_bad`` a warning and those patients are left out. A site without manifest.csv is fine for a study
that fuses only clinical data. Each schema omics layer is read when some patient names a sample of it
(``table_sources`` finds its table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.findings import MAX_PROBLEMS_LISTED, Findings
from fedfusion.data.tables.clinical import ClinicalRow, parse_clinical
from fedfusion.data.tables.manifest import MANIFEST_FILE, ManifestEntry, parse_manifest
from fedfusion.data.tables.omics import parse_omics_layer
from fedfusion.data.tables.panel_matrix import PanelMatrix
from fedfusion.data.tables.table_sources import TableSource, resolve_table_sources
from fedfusion.study.schema import StudySchema

CLINICAL_FILE = "clinical.csv"


@dataclass(frozen=True)
class SiteTables:
    """The usable content of a site's tables."""

    entries: list[ManifestEntry]
    """One per patient: manifest order, then clinical-only patients (no slides, no omics)."""
    clinical: dict[str, ClinicalRow]
    """Clinical row by patient id (a manifest patient without one is recorded as an error)."""
    layers: dict[str, PanelMatrix]
    """Each omics layer's table on its panel, by layer name; absent when no patient names a sample of it."""


def read_site_tables(site_dir: Path, schema: StudySchema, findings: Findings, *,
                     skip_bad: bool = False) -> SiteTables:
    """Read and cross-check the tables of ``site_dir``; every problem is recorded in ``findings``."""
    where = f"site {site_dir.name}"
    manifest_path = site_dir / MANIFEST_FILE
    needs_manifest = bool({"wsi", "omics"} & set(schema.modalities))
    manifest = parse_manifest(manifest_path, findings, schema) if manifest_path.exists() or needs_manifest else []
    clinical = parse_clinical(site_dir / CLINICAL_FILE, findings, schema)
    by_id = {row.patient_id: row for row in clinical.rows}
    unknown = [e.patient_id for e in manifest if e.patient_id not in clinical.listed]
    if unknown and clinical.listed:
        problem = (f"patients {unknown[:MAX_PROBLEMS_LISTED]} are in {MANIFEST_FILE} but have no row in "
                   f"{site_dir / CLINICAL_FILE}" + _more(unknown))
        if skip_bad:
            findings.warning(where, problem + "; skipped (no labels)")
            manifest = [e for e in manifest if e.patient_id in clinical.listed]
        else:
            findings.error(where, problem)
    listed = {e.patient_id for e in manifest}
    unlisted = [pid for pid in by_id if pid not in listed]
    if unlisted and manifest:
        findings.warning(where, f"{len(unlisted)} patients in {CLINICAL_FILE} are not in {MANIFEST_FILE}; kept "
                                f"without slides or omics: {unlisted[:MAX_PROBLEMS_LISTED]}")
    entries = manifest + [ManifestEntry(pid) for pid in unlisted]
    layers: dict[str, PanelMatrix] = {}
    for name, source in resolve_table_sources(site_dir, schema, findings).items():
        samples = {e.patient_id: e.samples[name] for e in entries if name in e.samples}
        layer = _read_layer(site_dir, source, samples, findings)
        if layer is not None:
            layers[name] = layer
    return SiteTables(entries=entries, clinical=by_id, layers=layers)


def _read_layer(site_dir: Path, source: TableSource, samples: dict[str, str],
                findings: Findings) -> PanelMatrix | None:
    """One omics layer's table, after checking every sample the manifest names is one of its columns."""
    if not samples:
        return None
    if source.path is None:
        findings.error(f"site {site_dir.name}", f"{MANIFEST_FILE} names {source.layer.name} samples "
                                                f"({source.layer.sample_column}) but there is no {source.layer.name} "
                                                f"table (looked for {source.looked_for})")
        return None
    layer = parse_omics_layer(source, findings)
    if layer is not None:
        for patient_id, sample in samples.items():
            if sample not in layer.values.columns:
                findings.error(layer.where, layer.missing_sample(sample, patient_id))
    return layer


def _more(items: list[str]) -> str:
    return f" (and {len(items) - MAX_PROBLEMS_LISTED} more)" if len(items) > MAX_PROBLEMS_LISTED else ""
