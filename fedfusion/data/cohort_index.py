"""The synthetic cohort's index (``cohort.json``) and the study files next to it: schema and simulator oracle.

A cohort directory holds one sub-directory per site plus these study-level files: ``study.toml`` (the study
schema, ``fedfusion.study.schema``) and, for synthetic cohorts, ``cohort.json`` (the generator's parameters and
sites) and ``oracle.csv`` (the ground-truth risks).
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
