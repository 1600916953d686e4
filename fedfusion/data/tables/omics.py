"""RNA-seq expression: read a TPM or raw-count table, validate it, and put each sample on the study's gene panel.

The table is genes x samples (first column the gene id, one column per sample), as CSV, TSV (optionally
compressed) or Parquet; a samples x genes table is recognised and transposed. Each sample is transformed on its
own: raw counts (``units = "counts"``) are first scaled to counts per million of the sample's library, then
log2(x + 1), reordered to the panel and z-scored within each sample; panel genes the table lacks are 0 (the
sample's mean) and reported; extra genes are ignored. No statistic over the site's patients is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from fedfusion.data.findings import Findings
from fedfusion.data.tables.panel_matrix import PanelMatrix, read_numeric_panel_table, record_cells

EXPRESSION_UNITS = ("tpm", "counts")
SAMPLE_KIND = "omics sample"


def parse_expression(path: Path, gene_panel: Sequence[str], findings: Findings,
                     units: str = "tpm") -> PanelMatrix | None:
    """The table on the panel, or None if it cannot be read; every problem is recorded in ``findings``.

    ``units`` is "tpm" or "counts" (raw read counts). Bad cells (not a number, negative) are all recorded, the
    first few by gene and sample. The values returned are only meaningful when no error was recorded (callers
    raise the findings' errors before using them, as the cohort loader does).
    """
    where = f"expression table {path}"
    read = read_numeric_panel_table(path, where, gene_panel, findings)
    if read is None:
        return None
    numeric, missing = read
    label = "TPM" if units == "tpm" else "count"
    record_cells(numeric < 0, where, findings, lambda gene, sample: f"{label} {numeric.at[gene, sample]} is negative")
    values = numeric.clip(lower=0).fillna(0.0)
    if units == "counts":
        values = counts_per_million(values, where, findings)
    # np.log2 of a DataFrame is a DataFrame (numpy dispatches the ufunc to pandas); the stubs say ndarray.
    log2 = cast(pd.DataFrame, np.log2(values.reindex(list(gene_panel)) + 1.0))
    return PanelMatrix(path=path, where=where, sample_kind=SAMPLE_KIND, values=standardize_per_sample(log2),
                       missing_genes=missing)


def counts_per_million(counts: pd.DataFrame, where: str, findings: Findings) -> pd.DataFrame:
    """Each sample's counts (all genes of the table, panel or not) scaled to a library of one million reads.

    A per-sample library-size normalisation (no gene lengths, so TPM-like rather than TPM); a sample without
    reads is an error naming it.
    """
    library = counts.sum(axis=0)
    empty = [str(s) for s in library.index[library <= 0]]
    if empty:
        findings.error(where, f"samples {empty[:10]} have no counts (library size 0)")
    return counts / library.where(library > 0, 1.0) * 1e6


def standardize_per_sample(log2: pd.DataFrame) -> pd.DataFrame:
    """Z-score each sample (column) over its own measured genes; unmeasured genes become 0 (the sample's mean).

    A per-patient transform: it uses no statistic over the site's patients, so it stays outside the privacy
    accounting, and it removes a sample's overall depth/scale, which log2(TPM + 1) alone leaves in (values
    around 10 would saturate the SELU network).
    """
    mean = log2.mean(axis=0, skipna=True)
    std = log2.std(axis=0, skipna=True, ddof=0).replace(0.0, 1.0)
    return ((log2 - mean) / std).fillna(0.0).astype(np.float32)
