"""Reading a site's CSV/TSV tables as text, with unreadable files recorded as findings naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedfusion.data.findings import Findings


def read_text_table(path: Path, where: str, findings: Findings, *, sep: str = ",",
                    index_col: int | None = None) -> pd.DataFrame | None:
    """``path`` as a table of stripped strings (blank cells stay ``""``), or None after recording why not."""
    try:
        table = pd.read_csv(path, sep=sep, index_col=index_col, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        findings.error(where, "file does not exist")
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
