"""Reading a site's tables (CSV/TSV as text, Parquet), with unreadable files recorded as findings naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow

from fedfusion.data.findings import Findings

TAB_SUFFIXES = {".tsv", ".tab", ".txt"}
COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def read_text_table(path: Path, where: str, findings: Findings, *, sep: str = ",",
                    index_col: int | None = None) -> pd.DataFrame | None:
    """``path`` as a table of stripped strings (blank cells stay ``""``), or None after recording why not."""
    try:
        table = pd.read_csv(path, sep=sep, index_col=index_col, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        findings.error(where, "file does not exist")
        return None
    except IsADirectoryError:
        findings.error(where, "is a directory, not a table file")
        return None
    except PermissionError:
        findings.error(where, "cannot be read (permission denied)")
        return None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        findings.error(where, f"not a readable table ({exc})")
        return None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def check_columns(table: pd.DataFrame, where: str, findings: Findings, required: tuple[str, ...],
                  optional: tuple[str, ...] = ()) -> bool:
    """Record missing required columns (an error) and unknown ones (a warning); True if none is missing."""
    missing = [c for c in required if c not in table.columns]
    if missing:
        findings.error(where, f"missing columns {missing} (has {list(table.columns)})")
    unknown = [c for c in table.columns if c not in required + optional]
    if unknown:
        findings.warning(where, f"unknown columns {unknown} are ignored")
    return not missing


def read_matrix_table(path: Path, where: str, findings: Findings) -> pd.DataFrame | None:
    """A features x samples table: row ids (stripped strings) as the index, one column per sample.

    CSV or TSV (by suffix, optionally compressed) are read as text, the first column being the ids; Parquet keeps
    its stored types, the ids being its stored index or else its first column. Repeated column names are kept as
    the file has them (pandas would rename a second ``S1`` to ``S1.1``), so that the caller can refuse them. None
    after recording why not.
    """
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in COMPRESSION_SUFFIXES]
    last = suffixes[-1] if suffixes else ""
    if last in PARQUET_SUFFIXES:
        table = _read_parquet(path, where, findings)
        sep = None
    else:
        sep = "\t" if last in TAB_SUFFIXES else ","
        table = read_text_table(path, where, findings, sep=sep, index_col=0)
        if table is not None:
            names = _header_names(path, sep)
            if len(names) == table.shape[1] + 1:
                table.columns = names[1:]
    if table is None:
        return None
    if table.shape[1] == 0:
        findings.error(where, "no sample columns" + (f" (is the separator {sep!r} right?)" if sep else ""))
        return None
    table.index = table.index.astype(str).str.strip()
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _header_names(path: Path, sep: str) -> list[str]:
    """The first line of a text table as the file has it (repeated names not renamed)."""
    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(name) for name in header.iloc[0]]


def _read_parquet(path: Path, where: str, findings: Findings) -> pd.DataFrame | None:
    try:
        table = pd.read_parquet(path, engine="pyarrow")
    except FileNotFoundError:
        findings.error(where, "file does not exist")
        return None
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        findings.error(where, f"not a readable Parquet table ({exc})")
        return None
    if isinstance(table.index, pd.RangeIndex) and table.shape[1] > 0:
        table = table.set_index(table.columns[0])
    return table
