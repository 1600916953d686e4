"""The one place a simulation reads a patient's outcome: the study's primary survival task (time, event)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedfusion.data.patient_records import PatientRecord, SurvivalLabel
from fedfusion.errors import ConfigError


def primary_survival(patient: PatientRecord) -> SurvivalLabel:
    """The patient's label of the study's primary survival task (the first survival task in schema order)."""
    label = next((label for label in patient.labels if isinstance(label, SurvivalLabel)), None)
    if label is None:
        raise ConfigError("the baselines compare held-out C-indices: the study needs a survival task")
    return label


def known_outcome(patients: Sequence[PatientRecord]) -> list[PatientRecord]:
    """The patients whose primary survival label is known, in order."""
    return [p for p in patients if primary_survival(p).known]


def survival_outcomes(patients: Sequence[PatientRecord]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Primary survival time and event of each patient."""
    labels = [primary_survival(p) for p in patients]
    return (np.array([label.time for label in labels], dtype=float),
            np.array([label.event for label in labels], dtype=float))
