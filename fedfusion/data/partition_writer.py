"""Writing the folders of a partition: each site folder whole (a temporary folder, then one rename), never over
anything that exists.

A site folder gets ``clinical.csv`` (its rows, the pooled columns), ``manifest.csv`` (when the pooled cohort has
one; slide paths rewritten relative to the new folder so they still point at the pooled slides, which are not
copied) and each omics table restricted to the site's samples, under the pooled table's name and format.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
from pathlib import Path

import pandas as pd

from fedfusion.atomic_io import TEMP_SUFFIX
from fedfusion.data.pooled_cohort import (
    CLINICAL_FILE,
    MANIFEST_FILE,
    PATIENT_ID,
    SLIDES_COLUMN,
    OmicsTable,
    PooledCohort,
    open_text,
    shown,
)
from fedfusion.errors import ConfigError, DataError


def check_empty_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that exists and holds anything (or is a file), naming it: nothing is overwritten."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output folder {out_dir}: exists and is not a folder; give a new or empty folder")
    if out_dir.is_dir():
        entries = sorted(p.name for p in out_dir.iterdir())
        if entries:
            raise ConfigError(f"output folder {out_dir} is not empty (holds {shown(entries)}); nothing is "
                              f"overwritten: give a new or empty folder")


def check_out_dir(out_dir: Path, pooled_dir: Path) -> None:
    """``check_empty_out_dir``, and refuse an output folder inside the pooled folder (never written)."""
    check_empty_out_dir(out_dir)
    pooled, out = Path(os.path.abspath(pooled_dir)), Path(os.path.abspath(out_dir))
    if out == pooled or pooled in out.parents or Path(pooled_dir).resolve() in Path(out_dir).resolve().parents:
        raise ConfigError(f"output folder {out_dir} is inside the pooled cohort {pooled_dir}, which is never "
                          f"written; give a folder outside it")


def site_samples(cohort: PooledCohort, patients: list[str], table: OmicsTable) -> list[str]:
    """The table's columns holding the samples the manifest names for ``patients`` (table order).

    ``DataError`` naming the table, the manifest column, the sample and the patient for a sample it lacks.
    """
    if cohort.manifest is None:  # never: a table is only read when there is a manifest
        raise DataError(f"omics table {table.path}: no manifest names its samples")
    rows = cohort.manifest[cohort.manifest[PATIENT_ID].isin(set(patients))]
    wanted = {str(s).strip(): str(p) for s, p in zip(rows[table.sample_column], rows[PATIENT_ID], strict=True)
              if str(s).strip()}
    missing = [f"{sample} (patient {pid})" for sample, pid in wanted.items() if sample not in table.samples]
    if missing:
        raise DataError(f"omics table {table.path}: no columns for samples {shown(missing)} named in "
                        f"{cohort.root / MANIFEST_FILE} column '{table.sample_column}'")
    return [column for sample, column in table.samples.items() if sample in wanted]


def write_site_folder(cohort: PooledCohort, out_dir: Path, name: str, patients: list[str]) -> None:
    """Write ``out_dir/name`` whole: into a temporary folder inside ``out_dir``, then renamed (module doc)."""
    final = out_dir / name
    if final.exists():
        raise ConfigError(f"site folder {final} exists already; nothing is overwritten")
    tmp = out_dir / f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    tmp.mkdir()  # (not mkdtemp: the folder gets the usual permissions, like the files in it)
    try:
        chosen = set(patients)
        clinical = cohort.clinical[cohort.clinical[PATIENT_ID].isin(chosen)]
        clinical.to_csv(tmp / CLINICAL_FILE, index=False)
        if cohort.manifest is not None:
            manifest = cohort.manifest[cohort.manifest[PATIENT_ID].isin(chosen)].copy()
            if SLIDES_COLUMN in manifest.columns:
                manifest[SLIDES_COLUMN] = [_rebase_slides(str(s), cohort.root, final)
                                           for s in manifest[SLIDES_COLUMN]]
            manifest.to_csv(tmp / MANIFEST_FILE, index=False)
        for table in cohort.omics:
            columns = site_samples(cohort, patients, table)
            if columns:  # a table without sample columns would be an error at the site: none is written
                _write_table(table, columns, tmp / table.relative_name)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rebase_slides(cell: str, pooled_dir: Path, site_dir: Path) -> str:
    """';'-separated slide paths relative to the pooled folder -> relative to the site folder (absolute kept)."""
    paths = [p.strip() for p in cell.split(";") if p.strip()]
    return ";".join(p if Path(p).is_absolute() else
                    Path(os.path.relpath(os.path.abspath(pooled_dir / p), os.path.abspath(site_dir))).as_posix()
                    for p in paths)


def _write_table(table: OmicsTable, columns: list[str], path: Path) -> None:
    """The gene id column(s) and ``columns`` of ``table``, in its format, at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if table.is_parquet:  # reads only the columns kept; pandas restores a stored index
        keep = [c for c in table.id_columns if not c.startswith("__index_level_")]
        pd.read_parquet(table.path, engine="pyarrow", columns=[*keep, *columns]).to_parquet(path, engine="pyarrow")
        return
    with open_text(table.path, "r") as source, open_text(path, "w") as target:
        rows = csv.reader(source, delimiter=table.separator)
        out = csv.writer(target, delimiter=table.separator, lineterminator="\n")
        header = next(rows)
        keep_at = [1 + header[1:].index(column) for column in columns]
        out.writerow([header[0], *columns])
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"omics table {table.path}: line {line} has {len(row)} cells, the header "
                                f"{len(header)}")
            out.writerow([row[0], *(row[i] for i in keep_at)])
