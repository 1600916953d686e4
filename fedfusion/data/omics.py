"""RNA-seq expression: read a TPM table, validate it, and put each sample on the study's gene panel.

The table is genes x samples (first column the gene id, one column per sample), as CSV or TSV (optionally
compressed); a samples x genes table is recognised and transposed. Each sample is transformed on its own:
log2(TPM + 1), reordered to the panel and z-scored within each sample; panel genes the table lacks are 0 (the
sample's mean) and reported; extra genes are ignored.
No statistic over the site's patients is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedfusion.data.findings import Findings
from fedfusion.data.table_files import read_text_table
from fedfusion.errors import DataError

TAB_SUFFIXES = {".tsv", ".tab", ".txt"}
MAX_CELLS_LISTED = 5
"""Bad cells of one kind spelled out per table; the rest are counted."""


@dataclass(frozen=True)
class PanelExpression:
    """A site's expression table on the gene panel, after log2(TPM + 1)."""

    path: Path
    values: pd.DataFrame
    """Panel genes (rows, panel order) x samples, float32."""
    missing_genes: list[str]
    """Panel genes absent from the table (set to 0)."""

    def sample_vector(self, sample: str, patient_id: str) -> np.ndarray:
        """``[panel size]`` float32 vector of ``sample``; ``DataError`` naming patient and file if absent."""
        if sample not in self.values.columns:
            raise DataError(f"expression table {self.path}: no sample column '{sample}' (omics sample of "
                            f"patient {patient_id})")
        return self.values[sample].to_numpy(dtype=np.float32, copy=True)


def read_expression(path: Path, gene_panel: Sequence[str]) -> PanelExpression:
    """Read a TPM table and harmonise it to ``gene_panel``; ``DataError`` names the file, gene and sample at fault."""
    findings = Findings()
    expression = parse_expression(path, gene_panel, findings)
    findings.raise_errors()
    assert expression is not None  # no errors recorded means the table was read
    return expression


def parse_expression(path: Path, gene_panel: Sequence[str], findings: Findings) -> PanelExpression | None:
    """The table on the panel, or None if it cannot be read; every problem is recorded in ``findings``.

    Bad cells (not a number, negative) are all recorded, the first few by gene and sample. The values returned
    are only meaningful when no error was recorded (the raising ``read_expression`` guarantees that).
    """
    where = f"expression table {path}"
    table = _read_table(path, where, findings)
    if table is None:
        return None
    panel = list(gene_panel)
    if len(set(table.columns) & set(panel)) > len(set(table.index) & set(panel)):
        table = table.T  # samples x genes
    if table.index.has_duplicates:
        findings.error(where, f"duplicate gene ids {sorted(set(table.index[table.index.duplicated()]))[:10]}")
        table = table[~table.index.duplicated()]
    numeric = table.apply(pd.to_numeric, errors="coerce")
    _record_cells(numeric.isna(), where, findings,
                  lambda gene, sample: f"value {table.at[gene, sample]!r} is not a number")
    _record_cells(numeric < 0, where, findings, lambda gene, sample: f"TPM {numeric.at[gene, sample]} is negative")
    missing = [g for g in panel if g not in numeric.index]
    if missing:
        findings.warning(where, f"{len(missing)} panel genes missing, set to 0: {missing[:10]}")
    log2 = np.log2(numeric.clip(lower=0).reindex(panel) + 1.0)
    return PanelExpression(path=path, values=standardize_per_sample(log2), missing_genes=missing)


def standardize_per_sample(log2: pd.DataFrame) -> pd.DataFrame:
    """Z-score each sample (column) over its own measured genes; unmeasured genes become 0 (the sample's mean).

    A per-patient transform: it uses no statistic over the site's patients, so it stays outside the privacy
    accounting, and it removes a sample's overall depth/scale, which log2(TPM + 1) alone leaves in (values
    around 10 would saturate the SELU network).
    """
    mean = log2.mean(axis=0, skipna=True)
    std = log2.std(axis=0, skipna=True, ddof=0).replace(0.0, 1.0)
    return ((log2 - mean) / std).fillna(0.0).astype(np.float32)


def _read_table(path: Path, where: str, findings: Findings) -> pd.DataFrame | None:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in {".gz", ".bz2", ".xz", ".zst"}]
    sep = "\t" if suffixes and suffixes[-1] in TAB_SUFFIXES else ","
    table = read_text_table(path, where, findings, sep=sep, index_col=0)
    if table is None:
        return None
    if table.shape[1] == 0:
        findings.error(where, f"no sample columns (is the separator '{sep}' right?)")
        return None
    table.index = table.index.astype(str).str.strip()
    return table


def _record_cells(mask: pd.DataFrame, where: str, findings: Findings, problem: Callable[[str, str], str]) -> None:
    """Record the cells where ``mask`` is True: the first few by gene and sample, then a count."""
    rows, cols = np.nonzero(mask.to_numpy())
    for r, c in zip(rows[:MAX_CELLS_LISTED], cols[:MAX_CELLS_LISTED]):
        gene, sample = str(mask.index[r]), str(mask.columns[c])
        findings.error(where, f"gene {gene}, sample {sample}: {problem(gene, sample)}")
    if len(rows) > MAX_CELLS_LISTED:
        findings.error(where, f"{len(rows) - MAX_CELLS_LISTED} more cells like that")
