"""A site's clinical table, read by the study schema: covariates, task labels and the fixed split.

``clinical.csv`` has a ``patient_id`` column, one column per schema covariate, the columns its tasks read
(survival time and event; classification labels, which may be absent or blank: unknown) and, when the schema
names one, the split column (``train`` / ``test`` / ``validation``). Covariates are encoded with study-fixed
constants (``covariates``), labels by the task rules (``task_labels``); no statistic of the site's patients is
used. Every problem is recorded as a finding naming the file, the column and the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.findings import Findings
from fedfusion.data.patient_records import Label, SurvivalLabel
from fedfusion.data.tables.covariates import CovariateValueError, encode_covariate
from fedfusion.data.tables.table_files import check_columns, read_text_table
from fedfusion.data.tables.task_labels import LabelValueError, check_time_unit, parse_label
from fedfusion.study.schema import SPLITS, StudySchema


@dataclass(frozen=True)
class ClinicalRow:
    """One patient's covariates, labels and fixed split."""

    patient_id: str
    covariates: npt.NDArray[np.float32]
    """``[schema.clinical_dim]`` float32 (``StudySchema.clinical_columns``)."""
    labels: tuple[Label, ...]
    """One per schema task."""
    split: str | None
    """``train`` / ``test`` / ``validation`` from the schema's split column; None without one (hash rule)."""


def clinical_columns(schema: StudySchema) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) columns of the clinical table under ``schema``."""
    required = ["patient_id", *(c.name for c in schema.covariates)]
    optional: list[str] = []
    for task in schema.tasks:
        (required if task.is_survival else optional).extend(task.columns)
    if schema.split_column:
        required.append(schema.split_column)
    return tuple(dict.fromkeys(required)), tuple(c for c in dict.fromkeys(optional) if c not in required)


@dataclass(frozen=True)
class ClinicalTable:
    """What a clinical table holds: its valid rows, and every patient id it lists (valid row or not)."""

    rows: list[ClinicalRow]
    listed: frozenset[str]


def parse_clinical(path: Path, findings: Findings, schema: StudySchema) -> ClinicalTable:
    """The clinical table's valid rows, in file order; every problem is recorded in ``findings``."""
    where = f"clinical table {path}"
    table = read_text_table(path, where, findings)
    required, optional = clinical_columns(schema)
    if table is None or not check_columns(table, where, findings, required, optional):
        return ClinicalTable([], frozenset())
    for column in optional:
        if column not in table.columns:
            findings.warning(where, f"no column {column}: every patient's label for it is unknown")
    ids = table["patient_id"].str.strip()
    duplicated = sorted(set(ids[ids.duplicated()]) - {""})
    if duplicated:
        findings.error(where, f"duplicate patient ids {duplicated[:10]}")
    rows: list[ClinicalRow] = []
    for line, record in enumerate(table.to_dict("records"), start=2):
        cells = {str(k): str(v) for k, v in record.items()}
        pid = cells["patient_id"].strip()
        who = f"patient {pid}" if pid else f"line {line}"
        if not pid:
            findings.error(where, f"line {line}: empty patient_id")
        values: list[float] = []
        labels: list[Label] = []
        ok = bool(pid)
        for covariate in schema.covariates:
            try:
                values.extend(encode_covariate(covariate, cells[covariate.name]))
            except CovariateValueError as exc:
                findings.error(where, f"{who}: {exc}")
                ok = False
        for task in schema.tasks:
            try:
                labels.append(parse_label(task, cells))
            except LabelValueError as exc:
                findings.error(where, f"{who}: {exc}")
                ok = False
        split = _split(schema, cells, where, who, findings)
        if ok and split != "":
            if not any(label.known for label in labels):
                findings.error(where, f"{who}: has no label for any task ({[t.name for t in schema.tasks]})")
                continue
            rows.append(ClinicalRow(pid, np.array(values, dtype=np.float32), tuple(labels), split))
    _check_units(schema, rows, where, findings)
    return ClinicalTable(rows, frozenset(ids) - {""})


def _split(schema: StudySchema, cells: dict[str, str], where: str, who: str, findings: Findings) -> str | None:
    """The patient's split, None without a split column, "" (after recording an error) for a bad value."""
    if not schema.split_column:
        return None
    value = cells[schema.split_column].strip().lower()
    if value not in SPLITS:
        findings.error(where, f"{who}: split column {schema.split_column} must be one of {list(SPLITS)}, "
                              f"got {cells[schema.split_column]!r}")
        return ""
    return value


def _check_units(schema: StudySchema, rows: list[ClinicalRow], where: str, findings: Findings) -> None:
    """An error for each survival task whose times cannot be in its declared unit."""
    for index, task in enumerate(schema.tasks):
        if task.is_survival:
            labels = [row.labels[index] for row in rows]
            problem = check_time_unit(task, [label for label in labels if isinstance(label, SurvivalLabel)])
            if problem:
                findings.error(where, problem)
