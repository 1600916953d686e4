"""A multi-site cohort folder: its sites, the gene panels they share and (synthetic only) the oracle.

A cohort folder holds one sub-folder per site (a site folder is one holding a ``clinical.csv``, the layout of
``fedfusion.data.synthetic.generator``) plus the study-level panel files. ``find_sites`` lists the sites of any
cohort folder, real or synthetic; ``cohort_panels`` is the one place the simulated sites' gene panels come from.
The synthetic generator also writes ``cohort.json`` (its parameters, the sites it made, the oracle file with the
planted risks); a real cohort needs none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedfusion.errors import DataError

COHORT_INDEX_FILE = "cohort.json"
GENE_PANEL_FILE = "gene_panel.txt"
CNV_PANEL_FILE = "cnv_panel.txt"
ORACLE_FILE = "oracle.csv"
SITE_DATA_FILE = "clinical.csv"
"""A sub-folder holding this file is a site folder."""
GENERATING_MARKER = ".fedfusion-generating"
"""Written first and removed last by the synthetic generator: a folder holding it is a generation interrupted."""


@dataclass(frozen=True)
class CohortSite:
    """One site of a cohort folder."""

    name: str
    site_dir: Path
    num_patients: int | None = None
    """As ``cohort.json`` lists it; None for a site found by ``find_sites``."""


@dataclass(frozen=True)
class CohortIndex:
    """What ``cohort.json`` says about a cohort directory."""

    root: Path
    sites: list[CohortSite]
    gene_panel_path: Path
    subtypes: list[str]
    oracle_path: Path | None
    """Ground truth of a synthetic cohort; None for real cohorts."""
    seed: int | None
    cnv_panel_path: Path | None = None
    """The study's copy-number gene list; None when the cohort has no copy-number layer."""


def read_cohort_index(cohort_dir: Path) -> CohortIndex:
    """Parse ``<cohort_dir>/cohort.json``; raise ``DataError`` naming the file for anything missing or malformed."""
    path = Path(cohort_dir) / COHORT_INDEX_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"cohort index {path}: file does not exist (is {cohort_dir} a cohort directory?)") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"cohort index {path}: not valid JSON ({exc})") from exc
    try:
        sites = [CohortSite(name=str(s["name"]), site_dir=path.parent / str(s["dir"]),
                           num_patients=int(s["num_patients"])) for s in raw["sites"]]
        panel = path.parent / str(raw["gene_panel"])
        subtypes = [str(s) for s in raw["subtypes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"cohort index {path}: missing or invalid entry {exc}") from exc
    if not sites:
        raise DataError(f"cohort index {path}: lists no sites")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise DataError(f"cohort index {path}: duplicate site names in {names}")
    oracle, cnv_panel = raw.get("oracle"), raw.get("cnv_panel")
    return CohortIndex(root=path.parent, sites=sites, gene_panel_path=panel, subtypes=subtypes,
                       oracle_path=None if oracle is None else path.parent / str(oracle), seed=raw.get("seed"),
                       cnv_panel_path=None if cnv_panel is None else path.parent / str(cnv_panel))


def find_sites(cohort_dir: Path) -> list[CohortSite]:
    """Every site folder of ``cohort_dir`` (a sub-folder holding a ``clinical.csv``; hidden ones skipped), by name."""
    root = Path(cohort_dir)
    if not root.is_dir():
        return []
    return [CohortSite(name=sub.name, site_dir=sub) for sub in sorted(root.iterdir(), key=lambda p: p.name)
            if sub.is_dir() and not sub.name.startswith(".") and (sub / SITE_DATA_FILE).is_file()]


@dataclass(frozen=True)
class CohortPanels:
    """The gene lists every site of a cohort reads its omics tables with."""

    gene_panel: Path
    cnv_panel: Path | None
    """None: the cohort has no copy-number layer."""


def cohort_panels(cohort_dir: Path) -> CohortPanels:
    """The cohort's panels: ``cohort.json``'s entries (a synthetic cohort), else ``gene_panel.txt`` (required) and
    ``cnv_panel.txt`` (optional) at the cohort folder's root.

    The one place the simulated sites' panels come from (a study schema, ``fedfusion.study.schema``, will take
    over); ``DataError`` naming the file when the gene panel is missing.
    """
    root = Path(cohort_dir)
    if (root / COHORT_INDEX_FILE).is_file():
        index = read_cohort_index(root)
        return CohortPanels(index.gene_panel_path, index.cnv_panel_path)
    gene_panel, cnv_panel = root / GENE_PANEL_FILE, root / CNV_PANEL_FILE
    if not gene_panel.is_file():
        raise DataError(f"cohort {root}: no gene panel {gene_panel} (the study's RNA-seq gene list, one symbol per "
                        f"line; optionally {CNV_PANEL_FILE} beside it for copy number)")
    return CohortPanels(gene_panel, cnv_panel if cnv_panel.is_file() else None)


def cohort_oracle(cohort_dir: Path) -> Path | None:
    """The oracle file of a synthetic cohort (named in its ``cohort.json``); None for a real cohort."""
    root = Path(cohort_dir)
    if not (root / COHORT_INDEX_FILE).is_file():
        return None
    return read_cohort_index(root).oracle_path


def read_gene_panel(path: Path) -> list[str]:
    """The study's gene symbols, one per line (blank lines ignored); duplicates or an empty panel are errors.

    Reads the copy-number gene list too (same format).
    """
    try:
        genes = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError as exc:
        raise DataError(f"gene panel {path}: file does not exist") from exc
    if not genes:
        raise DataError(f"gene panel {path}: lists no genes")
    duplicates = sorted({g for g in genes if genes.count(g) > 1})
    if duplicates:
        raise DataError(f"gene panel {path}: duplicate genes {duplicates[:10]}")
    return genes


def read_oracle(path: Path) -> pd.DataFrame:
    """The simulator's ground truth: one row per patient with at least site, patient_id, oracle_risk."""
    try:
        table = pd.read_csv(path, dtype={"site": str, "patient_id": str})
    except FileNotFoundError as exc:
        raise DataError(f"oracle {path}: file does not exist") from exc
    missing = {"site", "patient_id", "oracle_risk"} - set(table.columns)
    if missing:
        raise DataError(f"oracle {path}: missing columns {sorted(missing)}")
    return table
