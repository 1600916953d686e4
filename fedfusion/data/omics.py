"""RNA-seq expression: read a TPM table, validate it, and put each sample on the study's gene panel.

The table is genes x samples (first column the gene id, one column per sample), as CSV or TSV (optionally
compressed); a samples x genes table is recognised and transposed. Each sample is transformed on its own:
log2(TPM + 1), reordered to the panel and z-scored within each sample; panel genes the table lacks are 0 (the
sample's mean) and reported; extra genes are ignored.
No statistic over the site's patients is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedfusion.errors import DataError

TAB_SUFFIXES = {".tsv", ".tab", ".txt"}


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
    table = _read_table(path)
    panel = list(gene_panel)
    if len(set(table.columns) & set(panel)) > len(set(table.index) & set(panel)):
        table = table.T  # samples x genes
    if table.index.has_duplicates:
        raise DataError(f"expression table {path}: duplicate gene ids "
                        f"{sorted(set(table.index[table.index.duplicated()]))[:10]}")
    numeric = table.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna()
    if bad.to_numpy().any():
        gene, sample = _first(bad)
        raise DataError(f"expression table {path}: gene {gene}, sample {sample}: value "
                        f"{table.at[gene, sample]!r} is not a number")
    negative = numeric < 0
    if negative.to_numpy().any():
        gene, sample = _first(negative)
        raise DataError(f"expression table {path}: gene {gene}, sample {sample}: TPM {numeric.at[gene, sample]} "
                        "is negative")
    missing = [g for g in panel if g not in numeric.index]
    log2 = np.log2(numeric.reindex(panel) + 1.0)
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


def _read_table(path: Path) -> pd.DataFrame:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in {".gz", ".bz2", ".xz", ".zst"}]
    sep = "\t" if suffixes and suffixes[-1] in TAB_SUFFIXES else ","
    try:
        table = pd.read_csv(path, sep=sep, index_col=0, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"expression table {path}: file does not exist") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"expression table {path}: not a readable table ({exc})") from exc
    if table.shape[1] == 0:
        raise DataError(f"expression table {path}: no sample columns (is the separator '{sep}' right?)")
    table.index = table.index.astype(str).str.strip()
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _first(mask: pd.DataFrame) -> tuple[str, str]:
    rows, cols = np.nonzero(mask.to_numpy())
    return str(mask.index[rows[0]]), str(mask.columns[cols[0]])
