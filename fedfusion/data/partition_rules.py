"""Which site each patient of a pooled cohort goes to: by a clinical column, by a pattern of the id, or at random.

Three rules, each a small frozen dataclass (``ByColumn``, ``ByPattern``, ``RandomSplit``); ``assign_sites`` applies
one to the pooled ``clinical.csv`` and returns patient -> site name. Site names are sanitised to
``[A-Za-z0-9_-]`` (anything else becomes ``_``); two values that sanitise to the same name (ignoring case, as some
file systems do) are an error, not a silent merge.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedfusion.data.pooled_cohort import PATIENT_ID, shown
from fedfusion.errors import ConfigError, DataError

EXTERNAL_TEST = "external-test"
"""Folder of the shared external test set (patients of sites below the minimum); no site may take this name."""


@dataclass(frozen=True)
class ByColumn:
    """Each distinct value of a clinical column is a site."""

    column: str

    def arguments(self) -> dict[str, Any]:
        """The rule's arguments, for partition.json."""
        return {"column": self.column}


@dataclass(frozen=True)
class ByPattern:
    """A regex on the patient id; its first group (or the whole match) is looked up in a ``code,site`` CSV."""

    pattern: str
    mapping: Path
    drop_unmapped: bool = False
    """False: an id that does not match or has no mapping is an error; True: such patients are dropped."""

    def arguments(self) -> dict[str, Any]:
        """The rule's arguments, for partition.json."""
        return {"pattern": self.pattern, "mapping": str(self.mapping),
                "unmapped": "drop" if self.drop_unmapped else "error"}


@dataclass(frozen=True)
class RandomSplit:
    """A seeded random split into ``sites`` sites, optionally stratified on a clinical column."""

    sites: int
    seed: int
    stratify: str | None = None
    sizes: tuple[float, ...] | None = None
    """Relative site sizes (normalised to sum 1); None: as equal as possible."""

    def arguments(self) -> dict[str, Any]:
        """The rule's arguments, for partition.json."""
        return {"sites": self.sites, "seed": self.seed, "stratify": self.stratify,
                "sizes": list(self.sizes) if self.sizes is not None else None}


PartitionRule = ByColumn | ByPattern | RandomSplit


@dataclass(frozen=True)
class Assignment:
    """The site of each assigned patient, and the patients a rule dropped."""

    site_of: dict[str, str]
    """patient id -> site name, in clinical.csv order."""
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def rule_mode(rule: PartitionRule) -> str:
    """The rule's name in partition.json and the CLI: ``by-column``, ``by-pattern`` or ``random``."""
    return {ByColumn: "by-column", ByPattern: "by-pattern", RandomSplit: "random"}[type(rule)]


def sanitise_site_name(value: str) -> str:
    """A folder-safe site name: runs of characters outside ``[A-Za-z0-9_-]`` become ``_``, edges trimmed."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", value.strip()).strip("_")


def assign_sites(rule: PartitionRule, clinical: pd.DataFrame, clinical_path: Path) -> Assignment:
    """Apply ``rule`` to the clinical table (strings, stripped ``patient_id``); errors name file, column, patient."""
    if isinstance(rule, ByColumn):
        return _by_column(rule, clinical, clinical_path)
    if isinstance(rule, ByPattern):
        return _by_pattern(rule, list(clinical[PATIENT_ID]), clinical_path)
    return _random(rule, clinical, clinical_path)


def _column(clinical: pd.DataFrame, column: str, clinical_path: Path, role: str) -> list[str]:
    if column not in clinical.columns:
        raise DataError(f"clinical table {clinical_path}: no column '{column}' ({role}); has {list(clinical.columns)}")
    return [str(v).strip() for v in clinical[column]]


def _by_column(rule: ByColumn, clinical: pd.DataFrame, clinical_path: Path) -> Assignment:
    values = _column(clinical, rule.column, clinical_path, "the partition column")
    ids = list(clinical[PATIENT_ID])
    empty = [pid for pid, value in zip(ids, values, strict=True) if not value]
    if empty:
        raise DataError(f"clinical table {clinical_path}: column '{rule.column}' is empty for patients {shown(empty)}"
                        f"; every patient needs a site")
    names = _site_names(sorted(set(values)), f"clinical table {clinical_path}: column '{rule.column}'")
    return Assignment({pid: names[value] for pid, value in zip(ids, values, strict=True)})


def _site_names(values: Sequence[str], where: str) -> dict[str, str]:
    """value -> sanitised site name; refuses empty names, collisions and the external-test folder's name."""
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    for value in values:
        name = sanitise_site_name(value)
        if not name:
            raise DataError(f"{where}: value {value!r} gives no usable site name (only [A-Za-z0-9_-] are kept)")
        if name.lower() == EXTERNAL_TEST:
            raise DataError(f"{where}: value {value!r} would be a site named '{name}', the external test set's "
                            f"folder; rename it")
        if name.lower() in taken and taken[name.lower()] != value:
            raise DataError(f"{where}: values {taken[name.lower()]!r} and {value!r} both give the site name "
                            f"'{name}'; make them differ in letters or digits")
        taken[name.lower()] = value
        names[value] = name
    return names


def read_site_mapping(path: Path) -> dict[str, str]:
    """A two-column CSV ``code,site`` (header ``code,site`` optional) as code -> sanitised site name."""
    where = f"site mapping {path}"
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = [(line, [cell.strip() for cell in row]) for line, row in enumerate(csv.reader(handle), start=1)]
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: file does not exist") from exc
    except (UnicodeDecodeError, csv.Error, IsADirectoryError) as exc:
        raise ConfigError(f"{where}: not a readable CSV file ({exc})") from exc
    rows = [(line, row) for line, row in rows if any(row)]
    if rows and [c.lower() for c in rows[0][1]] == ["code", "site"]:
        rows = rows[1:]
    mapping: dict[str, str] = {}
    for line, row in rows:
        if len(row) != 2 or not all(row):
            raise ConfigError(f"{where}: line {line} must be 'code,site' (two non-empty cells), got {row}")
        code, site = row
        if code in mapping and mapping[code] != site:
            raise ConfigError(f"{where}: code '{code}' is mapped to both '{mapping[code]}' and '{site}'")
        mapping[code] = site
    if not mapping:
        raise ConfigError(f"{where}: maps no code to a site")
    names = _site_names(sorted(set(mapping.values())), where)
    return {code: names[site] for code, site in mapping.items()}


def _by_pattern(rule: ByPattern, ids: list[str], clinical_path: Path) -> Assignment:
    try:
        pattern = re.compile(rule.pattern)
    except re.error as exc:
        raise ConfigError(f"--by-pattern {rule.pattern!r}: not a regular expression ({exc})") from exc
    mapping = read_site_mapping(rule.mapping)
    site_of: dict[str, str] = {}
    no_match: list[str] = []
    no_site: list[str] = []
    for pid in ids:
        match = pattern.search(pid)
        code = (match.group(1) if pattern.groups else match.group(0)) if match else None
        if code is None:
            no_match.append(pid)
        elif code not in mapping:
            no_site.append(f"{pid} (code '{code}')")
        else:
            site_of[pid] = mapping[code]
    problems = ([f"patients {shown(no_match)} do not match {rule.pattern!r}"] if no_match else []) + \
               ([f"patients {shown(no_site)} have a code not in {rule.mapping}"] if no_site else [])
    if problems and not rule.drop_unmapped:
        raise DataError(f"clinical table {clinical_path}: " + "; ".join(problems)
                        + " (--unmapped drop leaves them out)")
    dropped = tuple(pid for pid in ids if pid not in site_of)
    notes = (f"dropped {len(dropped)} unmapped patients: " + "; ".join(problems),) if dropped else ()
    return Assignment(site_of, dropped=dropped, notes=notes)


def random_site_names(count: int) -> list[str]:
    """``site-1`` ... ``site-N`` (zero-padded to the width of N, so they sort in order)."""
    width = len(str(count))
    return [f"site-{i:0{width}d}" for i in range(1, count + 1)]


def _random(rule: RandomSplit, clinical: pd.DataFrame, clinical_path: Path) -> Assignment:
    if rule.sites < 1:
        raise ConfigError(f"--random must be a number of sites >= 1, got {rule.sites}")
    weights = np.ones(rule.sites) if rule.sizes is None else np.asarray(rule.sizes, dtype=float)
    if len(weights) != rule.sites or not np.all(np.isfinite(weights)) or not np.all(weights > 0):
        raise ConfigError(f"--sizes must give {rule.sites} positive proportions, got {list(weights)}")
    weights = weights / weights.sum()
    ids = np.asarray(clinical[PATIENT_ID], dtype=object)
    rng = np.random.default_rng(rule.seed)
    if rule.stratify is None:
        order = list(rng.permutation(ids))
    else:  # strata one after the other, each shuffled: dealing them out spreads every stratum evenly
        values = np.asarray(_column(clinical, rule.stratify, clinical_path, "--stratify"), dtype=object)
        order = [pid for stratum in sorted(set(values)) for pid in rng.permutation(ids[values == stratum])]
    names = random_site_names(rule.sites)
    counts = np.zeros(rule.sites)
    site_of: dict[str, str] = {}
    for k, pid in enumerate(order):  # each patient to the site furthest below its share so far
        j = int(np.argmax(weights * (k + 1) - counts))
        counts[j] += 1
        site_of[str(pid)] = names[j]
    return Assignment({pid: site_of[pid] for pid in clinical[PATIENT_ID]})
