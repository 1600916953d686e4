"""In-memory form of a site's cohort after the data path: one ``PatientRecord`` per patient.

These never leave the site. The model and the DP trainer consume them; the privacy unit is the patient,
so everything about one patient (all its tiles, its omics layers, its clinical row, its labels) lives in one record.
Shapes follow the study schema (``fedfusion.study.schema``): one omics vector per declared layer, one label per
declared task, in schema order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SurvivalLabel:
    """A survival endpoint: time in the task's unit and whether the event was observed then."""

    time: float
    """NaN when unknown (the patient is left out of this task's loss and metrics)."""
    event: int
    """1: the event (as the schema defines it) was observed at ``time``; 0: censored then."""

    @property
    def known(self) -> bool:
        """True when the patient has this label."""
        return math.isfinite(self.time)


@dataclass(frozen=True)
class ClassLabel:
    """A classification or binary endpoint: the class index in the task's class list."""

    index: int
    """-1 when unknown (left out of this task's loss and metrics)."""

    @property
    def known(self) -> bool:
        """True when the patient has this label."""
        return self.index >= 0


Label = SurvivalLabel | ClassLabel


@dataclass(frozen=True)
class PatientRecord:
    """One patient's model inputs and labels, after the site's data path.

    A modality the patient lacks is ``None`` (the model masks it); it is never silently dropped.
    """

    patient_id: str
    tile_features: npt.NDArray[np.float32] | None
    """``[num_tiles, tile_feature_dim]`` float32 features of the patient's tissue tiles (all slides)."""
    omics: tuple[npt.NDArray[np.float32] | None, ...]
    """One ``[panel size]`` float32 vector per schema omics layer (its units' transform), None where the patient
    lacks that layer."""
    clinical: npt.NDArray[np.float32]
    """``[schema.clinical_dim]`` float32 covariates encoded with study-fixed constants."""
    labels: tuple[Label, ...]
    """One label per schema task, in schema order."""
    radiology: npt.NDArray[np.float32] | None = None
    """``[schema.radiology_dim]`` float32 scaled radiomics features (mean over the patient's volumes), None without a
    usable volume or when the study fuses no radiology."""


@dataclass(frozen=True)
class SiteCohort:
    """A site's patients, split into training, held-out test and (optionally) validation patients."""

    site: str
    train: list[PatientRecord]
    test: list[PatientRecord]
    notes: list[str] = field(default_factory=list)
    """Human-readable findings of the data path (skipped slides, missing modalities, ...)."""
    validation: list[PatientRecord] = field(default_factory=list)
    """Patients the split column marks ``validation`` (never trained on; not part of the test metrics)."""

    @property
    def num_patients(self) -> int:
        """All patients of the site."""
        return len(self.train) + len(self.test) + len(self.validation)
