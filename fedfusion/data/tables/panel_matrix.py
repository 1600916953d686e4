"""A genes x samples table (expression, copy number) read from CSV, TSV or Parquet and put on a study gene panel.

Shared by the omics layers: orientation (a samples x genes table is recognised and transposed), duplicate gene
and sample ids, cells that are not numbers (every one recorded, the first few by gene and sample), panel genes the table
lacks (reported; the layer decides their value) and extra genes (ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedfusion.data.findings import Findings
from fedfusion.data.tables.table_files import read_matrix_table
from fedfusion.errors import DataError

MAX_CELLS_LISTED = 5
"""Bad cells of one kind spelled out per table; the rest are counted."""


@dataclass(frozen=True)
class PanelMatrix:
    """One omics layer of a site on the study's panel: panel genes (rows, panel order) x samples, float32."""

    path: Path
    where: str
    """How messages name the table, e.g. ``"expression table /site/expression_tpm.csv"``."""
    sample_kind: str
    """How messages name a sample of this layer, e.g. ``"omics sample"``."""
    values: pd.DataFrame
    missing_genes: list[str]
    """Panel genes absent from the table."""

    def sample_vector(self, sample: str, patient_id: str) -> npt.NDArray[np.float32]:
        """``[panel size]`` float32 vector of ``sample``; ``DataError`` naming patient and file if absent."""
        if sample not in self.values.columns:
            raise DataError(f"{self.where}: {self.missing_sample(sample, patient_id)}")
        return self.values[sample].to_numpy(dtype=np.float32, copy=True)

    def missing_sample(self, sample: str, patient_id: str) -> str:
        """The message for a sample the manifest names but the table lacks."""
        return f"no sample column '{sample}' ({self.sample_kind} of patient {patient_id})"


def read_numeric_panel_table(path: Path, where: str, gene_panel: Sequence[str],
                             findings: Findings) -> tuple[pd.DataFrame, list[str]] | None:
    """The table as numbers, genes x samples (extra genes kept), and the panel genes it lacks; None if unreadable.

    Cells that are not numbers are recorded as errors (and are NaN in the result).
    """
    table = read_matrix_table(path, where, findings)
    if table is None:
        return None
    panel = list(gene_panel)
    if len(set(table.columns) & set(panel)) > len(set(table.index) & set(panel)):
        table = table.T  # samples x genes
    if table.index.has_duplicates:
        findings.error(where, f"duplicate gene ids {sorted(set(table.index[table.index.duplicated()]))[:10]}")
        table = table[~table.index.duplicated()]
    if table.columns.has_duplicates:
        repeated = sorted({str(s) for s in table.columns[table.columns.duplicated()]})
        findings.error(where, f"duplicate sample ids {repeated[:10]}: each sample must be one column (which one "
                              "is the patient's cannot be told)")
        table = table.loc[:, ~table.columns.duplicated()]
    numeric = table.apply(pd.to_numeric, errors="coerce").astype(np.float64)
    record_cells(numeric.isna() | ~np.isfinite(numeric), where, findings,
                 lambda gene, sample: f"value {table.at[gene, sample]!r} is not a number")
    missing = [g for g in panel if g not in numeric.index]
    if missing:
        findings.warning(where, f"{len(missing)} panel genes missing, set to 0: {missing[:10]}")
    return numeric, missing


def record_cells(mask: pd.DataFrame, where: str, findings: Findings, problem: Callable[[str, str], str]) -> None:
    """Record the cells where ``mask`` is True: the first few by gene and sample, then a count."""
    rows, cols = np.nonzero(mask.to_numpy())
    for r, c in zip(rows[:MAX_CELLS_LISTED], cols[:MAX_CELLS_LISTED], strict=True):
        gene, sample = str(mask.index[r]), str(mask.columns[c])
        findings.error(where, f"gene {gene}, sample {sample}: {problem(gene, sample)}")
    if len(rows) > MAX_CELLS_LISTED:
        findings.error(where, f"{len(rows) - MAX_CELLS_LISTED} more cells like that")
