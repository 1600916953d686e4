"""In-memory form of a site's cohort after the data path: one ``PatientRecord`` per patient.

These never leave the site. The model and the DP trainer consume them; the privacy unit is the patient,
so everything about one patient (all its tiles, its omics row, its clinical row) lives in one record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class PatientRecord:
    """One patient's model inputs and labels, after the site's data path.

    A modality the patient lacks is ``None`` (the model masks it); it is never silently dropped.
    """

    patient_id: str
    tile_features: npt.NDArray[np.float32] | None
    """``[num_tiles, tile_feature_dim]`` float32 features of the patient's tissue tiles (all slides)."""
    omics: npt.NDArray[np.float32] | None
    """``[omics_dim]`` float32: log2(TPM+1) on the study's gene panel, z-scored within the patient."""
    clinical: npt.NDArray[np.float32]
    """``[clinical_dim]`` float32 covariates normalised with study-fixed constants."""
    time_months: float
    event: int
    """1 if death was observed at ``time_months``, 0 if censored then."""
    subtype: int
    """Class index in ``[0, num_subtypes)``; -1 when unknown (then excluded from the subtype loss)."""
    copy_number: npt.NDArray[np.float32] | None = None
    """``[cnv_dim]`` float32 log2 copy-number ratios on the study's copy-number panel (clipped, in units of about
    one copy: ``fedfusion.data.tables.copy_number``), or None."""


@dataclass(frozen=True)
class SiteCohort:
    """A site's patients, split into training and held-out test patients."""

    site: str
    train: list[PatientRecord]
    test: list[PatientRecord]
    notes: list[str] = field(default_factory=list)
    """Human-readable findings of the data path (skipped slides, missing modalities, ...)."""

    @property
    def num_patients(self) -> int:
        """All patients of the site (train + test)."""
        return len(self.train) + len(self.test)
