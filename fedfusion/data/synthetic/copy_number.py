"""Synthetic copy number: per-gene log2 ratios (genes x samples) with a risk amplicon, arm-level events and noise.

The first ``AMPLICON_SIZE`` genes of the copy-number panel form an amplicon whose level follows the patient's
``cnv_score`` (the driver of the omics risk module, see ``patients``); each sample also gets a few random
arm-level gains or losses over blocks of ``ARM_GENES`` genes, and per-gene measurement noise whose size depends
on the site's platform.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedfusion.data.synthetic.patients import PatientTruth
from fedfusion.data.synthetic.sites import SiteProfile

CNV_PANEL_SIZE = 40
CNV_PANEL_OFFSET = 100
"""The copy-number panel is SYN101..SYN140 of the expression gene namespace (the same genes, another assay)."""
AMPLICON_SIZE = 10
AMPLICON_LOG2_PER_SCORE = 0.45
ARM_GENES = 10
ARM_EVENT_RATE = 0.25
ARM_EVENT_SD = 0.35
NOISE_SD = (0.15, 0.3)
"""Range of the per-site measurement noise (log2 ratio)."""


def cnv_panel() -> list[str]:
    """The study's copy-number gene list."""
    return [f"SYN{CNV_PANEL_OFFSET + i + 1:03d}" for i in range(CNV_PANEL_SIZE)]


def simulate_copy_number(profile: SiteProfile, truth: PatientTruth, sample_ids: list[str],
                         rng: np.random.Generator) -> pd.DataFrame:
    """Log2 copy-ratio table (index gene_id, one column per sample) of the patients with ``truth.has_cnv``."""
    rows = np.flatnonzero(truth.has_cnv)
    noise_sd = np.random.default_rng(profile.batch_seed + 1).uniform(*NOISE_SD)
    log2 = rng.normal(0.0, noise_sd, (len(rows), CNV_PANEL_SIZE))
    log2[:, :AMPLICON_SIZE] += AMPLICON_LOG2_PER_SCORE * truth.cnv_score[rows, None]
    arms = rng.random((len(rows), CNV_PANEL_SIZE // ARM_GENES)) < ARM_EVENT_RATE
    shifts = rng.normal(0.0, ARM_EVENT_SD, arms.shape) * arms
    log2 += np.repeat(shifts, ARM_GENES, axis=1)
    return pd.DataFrame(log2.T.round(3), index=pd.Index(cnv_panel(), name="gene_id"), columns=sample_ids)
