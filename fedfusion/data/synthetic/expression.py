"""Synthetic RNA-seq: a TPM table (genes x samples) per site with a risk module, subtype modules and batch effects.

On the log2 scale each gene has a baseline level; the risk module's genes move with the patient's
``omics_score``, each subtype lifts its own module, and every site multiplies each gene by its own factor
(platform / protocol batch effect). A site may also lack a few panel genes and report some genes outside the panel.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedfusion.data.synthetic.patients import SUBTYPES, PatientTruth
from fedfusion.data.synthetic.sites import SiteProfile

PANEL_SIZE = 200
RISK_MODULE = range(0, 20)
"""Panel indices of the genes whose mean is the planted omics risk score."""
SUBTYPE_MODULES = {name: range(20 + 10 * k, 30 + 10 * k) for k, name in enumerate(SUBTYPES)}
"""Panel indices of the genes each subtype over-expresses."""
SUBTYPE_LIFT_LOG2 = 1.0
NOISE_LOG2 = 0.6
BATCH_SD_LOG2 = 0.4
EXTRA_GENES = 10
"""Genes each site reports beyond the study panel (they must be ignored)."""
GENE_BASELINE_SEED = 7
"""Seeds gene baselines: a property of the synthetic biology, shared by all cohorts."""


def gene_panel() -> list[str]:
    """The study's gene panel (``PANEL_SIZE`` synthetic gene symbols)."""
    return [f"SYN{i + 1:03d}" for i in range(PANEL_SIZE)]


def simulate_expression(profile: SiteProfile, truth: PatientTruth, sample_ids: list[str],
                        rng: np.random.Generator) -> pd.DataFrame:
    """TPM table (index gene_id, one column per sample) of the patients with ``truth.has_omics``, in patient order.

    ``sample_ids`` names those samples, one per such patient.
    """
    baseline = np.random.default_rng(GENE_BASELINE_SEED).normal(3.0, 1.5, PANEL_SIZE + EXTRA_GENES)
    rows = np.flatnonzero(truth.has_omics)
    log2 = baseline[None, :] + rng.normal(0.0, NOISE_LOG2, (len(rows), baseline.size))
    log2[:, list(RISK_MODULE)] += truth.omics_score[rows, None]
    for k, name in enumerate(SUBTYPES):
        log2[np.ix_(truth.subtype[rows] == k, list(SUBTYPE_MODULES[name]))] += SUBTYPE_LIFT_LOG2
    batch = np.random.default_rng(profile.batch_seed).normal(0.0, BATCH_SD_LOG2, baseline.size)
    tpm = np.exp2(log2 + batch[None, :]) - 1.0
    tpm = np.clip(tpm, 0.0, None)
    tpm = tpm / tpm.sum(axis=1, keepdims=True) * 1e6
    genes = gene_panel() + [f"SYNX{i + 1:02d}" for i in range(EXTRA_GENES)]
    table = pd.DataFrame(tpm.T.round(3), index=pd.Index(genes, name="gene_id"), columns=sample_ids)
    if profile.missing_panel_genes:
        table = table.drop(index=gene_panel()[-profile.missing_panel_genes:])
    return table

