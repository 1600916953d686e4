"""Where a site's omics tables are and in which units: default file names, or the site's ``tables.toml``.

Without ``tables.toml`` the expression table is the first of ``EXPRESSION_FILES`` present (TPM) and the
copy-number table the first of ``COPY_NUMBER_FILES``. A site whose files are named or measured otherwise says so::

    [expression]
    file = "rnaseq/star_counts.parquet"   # relative to the site folder, or absolute
    units = "counts"                      # "tpm" (default) or "counts" (raw read counts)

    [copy-number]
    file = "cnv/gene_log2_ratios.tsv"

Problems (not TOML, unknown units) are recorded as findings naming the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedfusion.data.findings import Findings
from fedfusion.data.tables.omics import EXPRESSION_UNITS

TABLES_CONFIG_FILE = "tables.toml"
_TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet")
EXPRESSION_FILES = tuple(f"expression_tpm{s}" for s in _TABLE_SUFFIXES)
COPY_NUMBER_FILES = tuple(f"copy_number{s}" for s in _TABLE_SUFFIXES)
SECTIONS = {"expression": ("file", "units"), "copy-number": ("file",)}


@dataclass(frozen=True)
class TableSource:
    """One omics table of a site: its file (None when there is none) and units."""

    path: Path | None
    units: str
    looked_for: str
    """Where it was looked for, for messages when it is absent."""


@dataclass(frozen=True)
class TableSources:
    """The site's expression and copy-number tables."""

    expression: TableSource
    copy_number: TableSource


def resolve_table_sources(site_dir: Path, findings: Findings) -> TableSources:
    """The site's omics table files and units (from ``tables.toml`` where it names them, else the defaults)."""
    config = _read_config(site_dir / TABLES_CONFIG_FILE, findings)
    where = f"site tables config {site_dir / TABLES_CONFIG_FILE}"
    expression = config.get("expression", {})
    units = str(expression.get("units", "tpm")).lower()
    if units not in EXPRESSION_UNITS:
        findings.error(where, f"[expression] units must be one of {list(EXPRESSION_UNITS)}, got {units!r}")
        units = "tpm"
    return TableSources(
        expression=_source(site_dir, expression.get("file"), EXPRESSION_FILES, units),
        copy_number=_source(site_dir, config.get("copy-number", {}).get("file"), COPY_NUMBER_FILES, "log2-ratio"),
    )


def _source(site_dir: Path, named: object, defaults: tuple[str, ...], units: str) -> TableSource:
    if named is not None:
        path = site_dir / str(named)  # an absolute path stays absolute
        return TableSource(path, units, str(path))
    found = next((site_dir / n for n in defaults if (site_dir / n).is_file()), None)
    return TableSource(found, units, f"{list(defaults)} in {site_dir}")


def _read_config(path: Path, findings: Findings) -> dict[str, dict[str, object]]:
    """The parsed ``tables.toml`` ({} when absent); unknown sections or keys are warnings, bad TOML an error."""
    where = f"site tables config {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        findings.error(where, f"not valid TOML ({exc})")
        return {}
    config: dict[str, dict[str, object]] = {}
    for section, body in raw.items():
        if section not in SECTIONS or not isinstance(body, dict):
            findings.warning(where, f"unknown section [{section}] is ignored (known: {sorted(SECTIONS)})")
            continue
        unknown = sorted(set(body) - set(SECTIONS[section]))
        if unknown:
            findings.warning(where, f"[{section}] unknown keys {unknown} are ignored")
        config[section] = body
    return config
