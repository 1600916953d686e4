"""An omics layer's table (expression, copy number, methylation, mutations, protein...) put on the study's panel.

The table is genes x samples (first column the gene id, one column per sample), as CSV, TSV (optionally
compressed) or Parquet; a samples x genes table is recognised and transposed. Each sample is transformed on its
own by the layer's units (``fedfusion.study.schema.OMICS_UNITS``); no statistic over the site's patients is used:

- ``tpm``: log2(x + 1), z-scored within the sample; ``counts``: first scaled to counts per million of the sample's
  own library (all genes of the table), then as TPM. Values that look already logged are refused (declare
  ``log2``);
- ``log2``: z-scored within the sample; ``normalized``: used as given; ``binary``: 0/1 calls as given;
- ``log2-ratio`` (copy number, 0 = two copies): clipped to [-2, 2] and divided by 0.5, so a one-copy change is about
  one unit, the scale of the z-scored layers (DP-SGD adds the same noise to every weight, so a feature on a smaller
  scale would get a worse signal-to-noise ratio).

Panel genes the table lacks are 0 and reported; extra genes are ignored.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pandas as pd

from fedfusion.data.findings import Findings
from fedfusion.data.tables.panel_matrix import PanelMatrix, read_numeric_panel_table, record_cells
from fedfusion.data.tables.table_sources import TableSource

CLIP_LOG2_RATIO = 2.0
LOG2_RATIO_PER_UNIT = 0.5
"""About a one-copy change: a single-copy gain of a diploid tumour is log2(3/2) = 0.58, a loss log2(1/2) = -1."""
LOGGED_MAX = 32.0
"""A TPM or count table whose largest value is below this is almost surely already log2-transformed (2^32 reads)."""
LOGGED_CHECK_MIN_VALUES = 50
"""The already-logged check needs at least this many values (a real table has thousands; a toy one proves nothing)."""


def parse_omics_layer(source: TableSource, findings: Findings) -> PanelMatrix | None:
    """The layer's table on its panel, or None if it cannot be read; every problem is recorded in ``findings``.

    The values returned are only meaningful when no error was recorded (callers raise the findings' errors first).
    """
    assert source.path is not None, "callers check that the layer has a table"
    layer, units, path = source.layer, source.units, source.path
    where = f"{layer.name} table {path}"
    panel = list(layer.genes)
    read = read_numeric_panel_table(path, where, panel, findings)
    if read is None:
        return None
    numeric, missing = read
    if units in ("tpm", "counts"):
        values = _log_expression(numeric, panel, units, where, findings)
    elif units == "log2":
        values = standardize_per_sample(numeric.reindex(panel))
    elif units == "log2-ratio":
        values = numeric.reindex(panel).clip(-CLIP_LOG2_RATIO, CLIP_LOG2_RATIO) / LOG2_RATIO_PER_UNIT
    else:
        if units == "binary":
            record_cells(~numeric.isin([0.0, 1.0]) & numeric.notna(), where, findings,
                         lambda gene, sample: f"value {numeric.at[gene, sample]} is not 0 or 1 (units \"binary\")")
        values = numeric.reindex(panel)
    return PanelMatrix(path=path, where=where, sample_kind=f"{layer.name} sample",
                       values=values.fillna(0.0).astype(np.float32).reindex(panel), missing_genes=missing)


def _log_expression(numeric: pd.DataFrame, panel: list[str], units: str, where: str,
                    findings: Findings) -> pd.DataFrame:
    """log2(TPM + 1) (counts first per million of their library) on the panel, z-scored within each sample."""
    label = "TPM" if units == "tpm" else "count"
    record_cells(numeric < 0, where, findings, lambda gene, sample: f"{label} {numeric.at[gene, sample]} is negative")
    largest = float(numeric.max().max()) if numeric.size else 0.0
    if numeric.size >= LOGGED_CHECK_MIN_VALUES and largest < LOGGED_MAX:
        findings.error(where, f"values look already log-transformed (largest {largest:g}, {units} tables reach "
                              "thousands): declare the layer's units as \"log2\" in the study schema")
    if units == "counts":
        fractional = numeric.notna() & (numeric != numeric.round())
        if bool(fractional.to_numpy().any()):
            findings.error(where, "raw counts must be whole numbers (declare units \"tpm\" or \"normalized\" for "
                                  "other values)")
    values = numeric.clip(lower=0).fillna(0.0)
    if units == "counts":
        values = counts_per_million(values, where, findings)
    # np.log2 of a DataFrame is a DataFrame (numpy dispatches the ufunc to pandas); the stubs say ndarray.
    log2 = cast(pd.DataFrame, np.log2(values.reindex(panel) + 1.0))
    return standardize_per_sample(log2)


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

