"""A pooled cohort folder, read as plain tables for ``fedfusion partition`` (nothing is validated beyond that).

A pooled folder has the layout of one site (docs/SITE_DATA.md) plus the study's schema::

    <pooled>/study.toml          the study schema (``fedfusion.study.schema``); panel files relative to it
    <pooled>/clinical.csv        one row per patient, a ``patient_id`` column
    <pooled>/manifest.csv        optional: patient_id, slides (';'-separated), one sample column per omics layer
    <pooled>/<layer file>.csv    each omics layer's table under its schema ``file`` stem (.csv, .tsv, .csv.gz,
                                 .tsv.gz, .parquet): genes x samples, first column the gene id
    slides anywhere (paths in the manifest, relative to the pooled folder or absolute)

Clinical and manifest tables are read as strings (blank cells stay ``""``), so what is written back per site is
the same text. Of an omics table only the header is read here (a pooled table may be large); each site's columns
are streamed from it when its folder is written. The folder is only read, never written.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow
import pyarrow.parquet

from fedfusion.errors import ConfigError, DataError
from fedfusion.study.schema import StudySchema, load_schema

SCHEMA_FILE = "study.toml"
CLINICAL_FILE = "clinical.csv"
MANIFEST_FILE = "manifest.csv"
PATIENT_ID = "patient_id"
SLIDES_COLUMN = "slides"
TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet")
"""Suffixes of an omics table, in the order a site looks for them."""
SHOWN = 5
"""How many patient ids or samples an error message lists."""


@dataclass(frozen=True)
class OmicsTable:
    """One omics layer's pooled table (genes x samples): only its header is read here; sites stream their columns."""

    layer: str
    sample_column: str
    """The manifest column naming each patient's sample of this layer."""
    path: Path
    relative_name: str
    """Its path relative to the pooled folder (the same name is written in each site folder)."""
    samples: dict[str, str]
    """Stripped sample name -> the table's column holding it, in table order."""
    id_columns: tuple[str, ...]
    """Parquet: the columns every subset keeps (a stored index, else the first column: the gene ids); text
    tables always keep their first column."""

    @property
    def is_parquet(self) -> bool:
        """True for a Parquet file (written back as Parquet), else a CSV/TSV text table (optionally gzipped)."""
        return self.path.name.lower().endswith(".parquet")

    @property
    def separator(self) -> str:
        """The text table's field separator: a tab for ``.tsv`` / ``.tsv.gz``, else a comma."""
        return "\t" if ".tsv" in self.path.name.lower() else ","


@dataclass(frozen=True)
class PooledCohort:
    """Everything ``fedfusion partition`` reads from a pooled cohort folder."""

    root: Path
    schema_path: Path
    schema: StudySchema
    clinical: pd.DataFrame
    """``clinical.csv`` as strings, rows in file order, with a stripped ``patient_id``."""
    clinical_sha256: str
    manifest: pd.DataFrame | None
    """``manifest.csv`` as strings (None when absent), stripped ``patient_id``; every patient has a clinical row."""
    omics: tuple[OmicsTable, ...]
    notes: tuple[str, ...]

    @property
    def clinical_path(self) -> Path:
        """The pooled ``clinical.csv``."""
        return self.root / CLINICAL_FILE

    @property
    def patient_ids(self) -> list[str]:
        """Patient ids in ``clinical.csv`` order."""
        return [str(p) for p in self.clinical[PATIENT_ID]]


def read_pooled_cohort(root: Path, schema_path: Path | None = None) -> PooledCohort:
    """Read a pooled cohort folder (module docstring); ``DataError``/``ConfigError`` naming file, column, patient."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"pooled cohort {root}: not a folder")
    schema_path = Path(schema_path) if schema_path is not None else root / SCHEMA_FILE
    schema = load_schema(schema_path)
    clinical_path = root / CLINICAL_FILE
    clinical = _read_patient_table(clinical_path, "clinical table")
    notes: list[str] = []
    manifest_path = root / MANIFEST_FILE
    manifest = _read_patient_table(manifest_path, "manifest") if manifest_path.exists() else None
    if manifest is not None:
        _check_manifest_patients(manifest, manifest_path, set(clinical[PATIENT_ID]), clinical_path)
    omics = []
    for layer in schema.omics:
        path = _find_table(root, layer.file, layer.name, notes)
        if path is None:
            continue
        if manifest is None:
            raise DataError(f"omics table {path}: there is no {manifest_path} to say which of its samples belong "
                            f"to which patient (column '{layer.sample_column}')")
        if layer.sample_column not in manifest.columns:
            raise DataError(f"manifest {manifest_path}: no column '{layer.sample_column}' (the samples of omics "
                            f"layer '{layer.name}', table {path}); has {list(manifest.columns)}")
        omics.append(_read_omics_table(path, root, layer.name, layer.sample_column))
    if (root / "tables.toml").exists():
        notes.append(f"{root / 'tables.toml'} is not read: omics tables are found by the schema's file names")
    return PooledCohort(root=root, schema_path=schema_path, schema=schema, clinical=clinical,
                        clinical_sha256=sha256_file(clinical_path), manifest=manifest, omics=tuple(omics),
                        notes=tuple(notes))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shown(items: list[str]) -> str:
    """The first few items and how many there are in all, for messages."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{items[:SHOWN]}{more}"


def _read_patient_table(path: Path, what: str) -> pd.DataFrame:
    where = f"{what} {path}"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{where}: file does not exist") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise DataError(f"{where}: not a readable table ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    if PATIENT_ID not in table.columns:
        raise DataError(f"{where}: no column '{PATIENT_ID}' (has {list(table.columns)})")
    table[PATIENT_ID] = table[PATIENT_ID].str.strip()
    empty = [str(line) for line in (table.index[table[PATIENT_ID] == ""] + 2)]
    if empty:
        raise DataError(f"{where}: empty {PATIENT_ID} on lines {shown(empty)}")
    duplicated = sorted(set(table[PATIENT_ID][table[PATIENT_ID].duplicated()]))
    if duplicated:
        raise DataError(f"{where}: patients listed more than once: {shown(duplicated)}")
    return table.reset_index(drop=True)


def _check_manifest_patients(manifest: pd.DataFrame, path: Path, clinical_ids: set[str], clinical_path: Path) -> None:
    strangers = [p for p in manifest[PATIENT_ID] if p not in clinical_ids]
    if strangers:
        raise DataError(f"manifest {path}: patients {shown(strangers)} have no row in {clinical_path}, so no site "
                        f"can be chosen for them (and a site would refuse them: no labels)")


def _find_table(root: Path, stem: str, layer: str, notes: list[str]) -> Path | None:
    if Path(stem).is_absolute() or ".." in Path(stem).parts:
        raise ConfigError(f"omics layer '{layer}': file '{stem}' must be a name inside the cohort folder")
    present = [root / f"{stem}{suffix}" for suffix in TABLE_SUFFIXES if (root / f"{stem}{suffix}").is_file()]
    if len(present) > 1:
        notes.append(f"omics layer '{layer}': {present[0].name} is used (as at a site); "
                     f"{[p.name for p in present[1:]]} are ignored")
    return present[0] if present else None


def _read_omics_table(path: Path, root: Path, layer: str, sample_column: str) -> OmicsTable:
    """The table's header: its sample columns and, for Parquet, the gene id columns."""
    where = f"omics table {path}"
    id_columns: tuple[str, ...] = ()
    try:
        if path.name.lower().endswith(".parquet"):
            schema = pyarrow.parquet.read_schema(path)
            stored = [c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)]
            id_columns = tuple(stored) if stored else tuple(schema.names[:1])
            columns = [c for c in schema.names if c not in id_columns]
        else:
            with open_text(path, "r") as handle:
                header = next(csv.reader(handle, delimiter="\t" if ".tsv" in path.name.lower() else ","), [])
            columns = header[1:]
    except (pyarrow.ArrowException, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{where}: not a readable table ({exc})") from exc
    stripped = [str(c).strip() for c in columns]
    duplicated = sorted({c for c in stripped if stripped.count(c) > 1})
    if duplicated:
        raise DataError(f"{where}: sample columns named more than once: {shown(duplicated)}")
    if not columns:
        raise DataError(f"{where}: no sample columns (genes x samples, the first column the gene id)")
    return OmicsTable(layer=layer, sample_column=sample_column, path=path,
                      relative_name=path.relative_to(root).as_posix(),
                      samples={c.strip(): c for c in map(str, columns)}, id_columns=id_columns)


def open_text(path: Path, mode: str) -> IO[str]:
    """A CSV/TSV file for ``csv`` reading (``"r"``) or writing (``"w"``), gzipped when its name ends in .gz.

    Written gzip files carry no time stamp, so the same content gives the same bytes.
    """
    if not path.name.lower().endswith(".gz"):
        return open(path, mode, encoding="utf-8", newline="")
    if mode == "r":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8", newline="")
