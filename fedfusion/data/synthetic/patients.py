"""Ground truth of synthetic patients: subtype, age, histological grade, omics risk module, amplicon, survival.

The planted true log-risk is ``W_IMAGE * image_z + W_OMICS * omics_score + W_AGE * age_z`` with
``image_z = (image_score - 0.5) / 0.2`` where ``image_score`` is the fraction of the tissue drawn with the
high-grade texture, ``omics_score`` the shift of the risk gene module and ``age_z = (age - 60) / 10``. The
risk module is driven by an amplified driver gene region: its copy-number level ``cnv_score`` is ``omics_score``
plus patient-level variation (``CNV_DRIVER_SD``), so the copy-number layer is a second, independent readout of
the omics risk (and the only one for patients without RNA-seq) without adding risk of its own. Each
modality carries part of the signal; the combination ranks patients best. Times follow an exponential model
with that hazard (median 22 months at log-risk 0), censored by end of follow-up and loss to follow-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedfusion.data.synthetic.sites import SiteProfile

AGE_MEAN_YEARS = 60.0
AGE_SCALE_YEARS = 10.0
"""The synthetic schema's age covariate centre and scale (``fedfusion/study/synthetic_schema.toml``; a test keeps them
equal)."""
SUBTYPES = ("basal", "her2", "luminal")
"""Subtype names of the synthetic study, in the class order of the schema's subtype task."""
W_IMAGE, W_OMICS, W_AGE = 1.0, 1.0, 0.7
CNV_DRIVER_SD = 0.5
"""Spread of the driver amplicon's level around the omics risk it drives."""
BASELINE_MEDIAN_MONTHS = 22.0
FOLLOW_UP_MONTHS = (30.0, 120.0)
"""End of follow-up is uniform in this range; loss to follow-up is exponential with mean ``LOSS_MEAN_MONTHS``."""
LOSS_MEAN_MONTHS = 400.0
GRADE_BETA = {"basal": (4.0, 2.5), "her2": (3.0, 3.0), "luminal": (2.0, 4.0)}
"""Beta(a, b) of the high-grade fraction per subtype: basal tumours tend to be high grade."""
MISSING_RATE = 0.03
"""Chance that a patient has no slide, and (independently) no RNA-seq sample."""
CNV_MISSING_RATE = 0.12
"""Chance that a patient has no copy-number profile (independently of the other modalities)."""
MALE_RATE = 0.02


@dataclass(frozen=True)
class PatientTruth:
    """Arrays over a site's patients (index i is patient i)."""

    patient_ids: list[str]
    subtype: npt.NDArray[np.int64]
    """Index into ``SUBTYPES``."""
    age: npt.NDArray[np.float64]
    male: npt.NDArray[np.bool_]
    image_score: npt.NDArray[np.float64]
    omics_score: npt.NDArray[np.float64]
    cnv_score: npt.NDArray[np.float64]
    log_risk: npt.NDArray[np.float64]
    time_months: npt.NDArray[np.float64]
    event: npt.NDArray[np.int64]
    has_slide: npt.NDArray[np.bool_]
    has_omics: npt.NDArray[np.bool_]
    has_cnv: npt.NDArray[np.bool_]

    @property
    def age_z(self) -> npt.NDArray[np.float64]:
        """Age standardised with the study-fixed constants."""
        return (self.age - AGE_MEAN_YEARS) / AGE_SCALE_YEARS


def planted_log_risk(image_score: npt.NDArray[np.float64], omics_score: npt.NDArray[np.float64],
                     age: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The true log-hazard ratio of the synthetic study."""
    image_z = (image_score - 0.5) / 0.2
    age_z = (age - AGE_MEAN_YEARS) / AGE_SCALE_YEARS
    return W_IMAGE * image_z + W_OMICS * omics_score + W_AGE * age_z


def simulate_patients(profile: SiteProfile, rng: np.random.Generator) -> PatientTruth:
    """Draw the ground truth of one site's patients from its case mix."""
    n = profile.num_patients
    subtype = rng.choice(len(SUBTYPES), size=n, p=np.asarray(profile.subtype_probs))
    a, b = (np.array([GRADE_BETA[s][k] for s in SUBTYPES])[subtype] for k in (0, 1))
    image_score = rng.beta(a, b)
    omics_score = rng.standard_normal(n)
    age = np.clip(rng.normal(profile.age_mean, 10.0, n), 25.0, 95.0).round()
    log_risk = planted_log_risk(image_score, omics_score, age)
    hazard = np.log(2.0) / BASELINE_MEDIAN_MONTHS * np.exp(log_risk)
    death = rng.exponential(1.0 / hazard)
    censor = np.minimum(rng.uniform(*FOLLOW_UP_MONTHS, n), rng.exponential(LOSS_MEAN_MONTHS, n))
    time = np.maximum(np.minimum(death, censor), 0.1).round(1)
    prefix = profile.name.upper()
    male = rng.random(n) < MALE_RATE
    has_slide, has_omics = rng.random(n) >= MISSING_RATE, rng.random(n) >= MISSING_RATE
    # Copy number is drawn last, so every other draw is the same as in cohorts generated before it existed.
    cnv_score = omics_score + rng.normal(0.0, CNV_DRIVER_SD, n)
    return PatientTruth(
        patient_ids=[f"{prefix}-P{i + 1:04d}" for i in range(n)],
        subtype=subtype, age=age, male=male,
        image_score=image_score, omics_score=omics_score, cnv_score=cnv_score, log_risk=log_risk,
        time_months=time, event=(death <= censor).astype(int),
        has_slide=has_slide, has_omics=has_omics, has_cnv=rng.random(n) >= CNV_MISSING_RATE,
    )
