"""Real public cohorts written as pooled cohort folders (``fedfusion example-cohort NAME --out DIR``).

``gbsg2``: the German Breast Cancer Study Group 2 trial (686 node-positive breast cancer patients, Schumacher et
al. 1994), as shipped inside lifelines (``lifelines.datasets.load_gbsg2``; nothing is downloaded). Written as::

    <out>/clinical.csv   patient_id (GBSG2-0001 ... in lifelines' row order), the ten original columns (horTh, age,
                         menostat, tsize, tgrade, pnodes, progrec, estrec, time in days, cens: 1 = recurrence or
                         death observed), and split (train / test)
    <out>/study.toml     the study schema (``fedfusion/study/gbsg2_schema.toml``; clinical covariates with
                         study-fixed centres and scales, one survival task, split-column "split")

The split is fixed and reproducible without any random generator: within each value of ``cens``, patients are
ordered by sha256("fedfusion-gbsg2-split-v1:" + patient_id) and the first round(25%) are ``test`` (172 of 686:
97 of the 387 censored, 75 of the 299 with an event), the rest ``train``. ``study.toml`` is written last: a
folder with it is complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pandas as pd

from fedfusion.atomic_io import atomic_write_bytes, atomic_write_text
from fedfusion.data.partition_writer import check_empty_out_dir
from fedfusion.data.pooled_cohort import CLINICAL_FILE, PATIENT_ID, SCHEMA_FILE
from fedfusion.errors import DataError

GBSG2_COLUMNS = ("horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec", "time", "cens")
GBSG2_PATIENTS = 686
GBSG2_SCHEMA = "gbsg2_schema.toml"
"""Package data of ``fedfusion.study``."""
SPLIT_SALT = "fedfusion-gbsg2-split-v1"
TEST_FRACTION = 0.25


def gbsg2_clinical() -> pd.DataFrame:
    """GBSG2 as a clinical table: patient_id, the original columns, the fixed train/test split (module doc)."""
    from lifelines.datasets import load_gbsg2  # lifelines is slow to import; only this command needs it

    raw: pd.DataFrame = load_gbsg2()
    if tuple(raw.columns) != GBSG2_COLUMNS or len(raw) != GBSG2_PATIENTS:
        raise DataError(f"lifelines' GBSG2 table has {len(raw)} rows and columns {list(raw.columns)}; expected "
                        f"{GBSG2_PATIENTS} rows of {list(GBSG2_COLUMNS)} (another lifelines version?)")
    table = raw.reset_index(drop=True)
    table.insert(0, PATIENT_ID, [f"GBSG2-{i:04d}" for i in range(1, len(table) + 1)])
    table["split"] = fixed_split(list(table[PATIENT_ID]), [str(v) for v in table["cens"]])
    return table


def fixed_split(patient_ids: list[str], strata: list[str], *, salt: str = SPLIT_SALT,
                test_fraction: float = TEST_FRACTION) -> list[str]:
    """``train`` / ``test`` per patient: per stratum, the round(fraction) first by salted sha256 of the id are test."""
    split = ["train"] * len(patient_ids)
    for stratum in sorted(set(strata)):
        members = [i for i, s in enumerate(strata) if s == stratum]
        members.sort(key=lambda i: hashlib.sha256(f"{salt}:{patient_ids[i]}".encode()).hexdigest())
        for i in members[: round(test_fraction * len(members))]:
            split[i] = "test"
    return split


def gbsg2_schema_text() -> str:
    """The GBSG2 study schema (TOML text with its rationale comments)."""
    return resources.files("fedfusion.study").joinpath(GBSG2_SCHEMA).read_text(encoding="utf-8")


def write_gbsg2(out_dir: Path) -> Path:
    """Write GBSG2 as a pooled cohort folder into ``out_dir`` (missing or empty) and return it."""
    out_dir = Path(out_dir)
    check_empty_out_dir(out_dir)
    table = gbsg2_clinical()
    schema = gbsg2_schema_text()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / CLINICAL_FILE, table.to_csv(index=False).encode("utf-8"))
    atomic_write_text(out_dir / SCHEMA_FILE, schema)
    return out_dir


PUBLIC_COHORTS: dict[str, Callable[[Path], Path]] = {"gbsg2": write_gbsg2}
"""Name -> writer of each public cohort ``fedfusion example-cohort`` knows."""
