"""A cohort folder: its sites, the study schema beside them and (synthetic only) the generator's index and oracle.

A cohort folder holds one sub-folder per site (a site folder is one holding a ``clinical.csv``) and the study
schema ``study.toml`` (``fedfusion.study.schema``). ``find_sites`` lists the sites of any cohort folder, real or
synthetic. The synthetic generator also writes ``cohort.json`` (its parameters, the sites it made, the oracle file
with the planted risks); a real cohort needs none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedfusion.errors import DataError

COHORT_INDEX_FILE = "cohort.json"
SCHEMA_FILE = "study.toml"
"""The study schema beside the site folders of a cohort."""
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
    oracle_path: Path | None
    """Ground truth of a synthetic cohort; None for real cohorts."""
    seed: int | None


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
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"cohort index {path}: missing or invalid entry {exc}") from exc
    if not sites:
        raise DataError(f"cohort index {path}: lists no sites")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise DataError(f"cohort index {path}: duplicate site names in {names}")
    oracle = raw.get("oracle")
    return CohortIndex(root=path.parent, sites=sites,
                       oracle_path=None if oracle is None else path.parent / str(oracle), seed=raw.get("seed"))


def find_sites(cohort_dir: Path) -> list[CohortSite]:
    """Every site folder of ``cohort_dir`` (a sub-folder holding a ``clinical.csv``; hidden ones skipped), by name."""
    root = Path(cohort_dir)
    if not root.is_dir():
        return []
    return [CohortSite(name=sub.name, site_dir=sub) for sub in sorted(root.iterdir(), key=lambda p: p.name)
            if sub.is_dir() and not sub.name.startswith(".") and (sub / SITE_DATA_FILE).is_file()]


def cohort_oracle(cohort_dir: Path) -> Path | None:
    """The oracle file of a synthetic cohort (named in its ``cohort.json``); None for a real cohort."""
    root = Path(cohort_dir)
    if not (root / COHORT_INDEX_FILE).is_file():
        return None
    return read_cohort_index(root).oracle_path



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
