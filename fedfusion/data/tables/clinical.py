"""A site's clinical table: validation, study-fixed normalisation of covariates, survival labels, subtype index.

``clinical.csv`` has columns patient_id, age, sex (F/M), survival_months (> 0), event (0 = censored, 1 = death)
and optionally subtype (a name). The covariate vector is ``[age_z, sex]`` with ``age_z`` from the study-fixed
constants in ``fedfusion.study.config`` and sex 0 = F, 1 = M; no statistic of the site's patients is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.findings import Findings
from fedfusion.data.tables.table_files import check_columns, read_text_table
from fedfusion.study.config import AGE_MEAN_YEARS, AGE_SCALE_YEARS, STUDY_SUBTYPES

REQUIRED_COLUMNS = ("patient_id", "age", "sex", "survival_months", "event")
OPTIONAL_COLUMNS = ("subtype",)
SEX_CODES = {"f": 0.0, "female": 0.0, "m": 1.0, "male": 1.0}


@dataclass(frozen=True)
class ClinicalRow:
    """One patient's covariates and labels."""

    patient_id: str
    covariates: npt.NDArray[np.float32]
    """``[2]`` float32: age_z, sex (0 = F, 1 = M)."""
    time_months: float
    event: int
    subtype: int
    """Index into the sorted study subtypes, -1 if unknown or not given."""


def subtype_index(name: str, subtypes: Sequence[str]) -> int:
    """Index of ``name`` in the sorted study subtypes (case-insensitive), -1 if blank or not a study subtype."""
    order = sorted(s.lower() for s in subtypes)
    key = name.strip().lower()
    return order.index(key) if key in order else -1


def parse_clinical(path: Path, findings: Findings, subtypes: Sequence[str] = STUDY_SUBTYPES) -> list[ClinicalRow]:
    """The clinical table's valid rows, in file order; every problem is recorded in ``findings``."""
    where = f"clinical table {path}"
    table = read_text_table(path, where, findings)
    if table is None or not check_columns(table, where, findings, REQUIRED_COLUMNS, OPTIONAL_COLUMNS):
        return []
    rows: list[ClinicalRow] = []
    unknown_subtypes: set[str] = set()
    ids = table["patient_id"].str.strip()
    duplicated = sorted(set(ids[ids.duplicated()]) - {""})
    if duplicated:
        findings.error(where, f"duplicate patient ids {duplicated}")
    for line, record in enumerate(table.to_dict("records"), start=2):
        pid = str(record["patient_id"]).strip()
        who = f"patient {pid}" if pid else f"line {line}"
        if not pid:
            findings.error(where, f"line {line}: empty patient_id")
        age = _number(record["age"])
        if age is None or not 0 < age < 130:
            findings.error(where, f"{who}: age must be a number of years in (0, 130), got {record['age']!r}")
        sex = SEX_CODES.get(str(record["sex"]).strip().lower())
        if sex is None:
            findings.error(where, f"{who}: sex must be F or M, got {record['sex']!r}")
        time = _number(record["survival_months"])
        if time is None or not time > 0:
            findings.error(where, f"{who}: survival_months must be a number > 0, got {record['survival_months']!r}")
        event = _number(record["event"])
        if event not in (0.0, 1.0):
            findings.error(where, f"{who}: event must be 0 (censored) or 1 (death), got {record['event']!r}")
        subtype_name = str(record.get("subtype", "")).strip()
        subtype = subtype_index(subtype_name, subtypes) if subtype_name else -1
        if subtype_name and subtype < 0:
            unknown_subtypes.add(subtype_name)
        if pid and age is not None and sex is not None and time is not None and event is not None:
            covariates = np.array([(age - AGE_MEAN_YEARS) / AGE_SCALE_YEARS, sex], dtype=np.float32)
            rows.append(ClinicalRow(pid, covariates, float(time), int(event), subtype))
    if unknown_subtypes:
        findings.warning(where, f"subtypes {sorted(unknown_subtypes)} are not study subtypes {sorted(subtypes)}; "
                                "treated as unknown")
    return rows


def _number(raw: object) -> float | None:
    """``raw`` as a finite float, or None."""
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None
