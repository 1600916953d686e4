"""The cohort index (``cohort.json``) and the study files next to it: gene panel and simulator oracle.

A cohort directory holds one sub-directory per site plus these study-level files; the simulator reads the index
to find the sites, the gene panel they share and (for synthetic cohorts) the ground-truth risks.
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


@dataclass(frozen=True)
class CohortSite:
    """One site listed in the cohort index."""

    name: str
    site_dir: Path
    num_patients: int


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
