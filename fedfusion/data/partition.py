"""``fedfusion partition``: one pooled cohort folder -> one folder per site, plus a shared external test set.

A pooled folder (``pooled_cohort``) is split by a rule (``partition_rules``: a clinical column, a pattern of the
patient id with a code -> site mapping, or a seeded, optionally stratified random split). Sites with fewer than
``min_patients`` patients go to one shared ``external-test/`` folder or are dropped. The output folder must be
missing or empty; it receives::

    <out>/study.toml          a copy of the pooled schema file (and the panel files it names, so it still loads)
    <out>/<site>/...          clinical.csv, manifest.csv, omics tables: the site's rows and samples only
    <out>/external-test/...   the same, for the patients of the small sites (unless they are dropped)
    <out>/partition.json      mode, arguments, seed, sites with patient and event counts, what was dropped,
                              sha256 of the pooled clinical.csv; written last: a folder with it is complete

Everything is read and checked before the first file is written (of an omics table its header: the rows are
streamed into each site's copy, and a malformed row stops there); each site folder is written whole into a
temporary folder and renamed (``partition_writer``), so an interruption leaves no half-written site (only a
``.<site>.*.partial`` folder, which may be deleted). The pooled folder is never written.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedfusion.atomic_io import atomic_write_bytes, atomic_write_text
from fedfusion.data.partition_rules import EXTERNAL_TEST, PartitionRule, RandomSplit, assign_sites, rule_mode
from fedfusion.data.partition_writer import check_out_dir, site_samples, write_site_folder
from fedfusion.data.pooled_cohort import PATIENT_ID, SCHEMA_FILE, PooledCohort, read_pooled_cohort, sha256_file
from fedfusion.errors import ConfigError, DataError
from fedfusion.study.schema import load_schema

REPORT_FILE = "partition.json"
DEFAULT_MIN_PATIENTS = 20
SMALL_SITE_RULES = ("external-test", "drop")
"""What happens to the patients of a site below the minimum: the shared external test set, or nothing."""


@dataclass(frozen=True)
class SiteSummary:
    """One written folder: its name, patients, events per survival task, train/test/validation counts."""

    name: str
    patients: int
    events: dict[str, int]
    splits: dict[str, int]
    from_sites: tuple[str, ...] = ()
    """external-test only: the small sites its patients came from."""


@dataclass(frozen=True)
class PartitionReport:
    """What ``partition_cohort`` wrote (also in ``<out>/partition.json``)."""

    out_dir: Path
    sites: tuple[SiteSummary, ...]
    external_test: SiteSummary | None
    small_sites_dropped: tuple[SiteSummary, ...]
    rule_dropped: int
    """Patients the rule left out (unmapped ids with ``--unmapped drop``)."""
    notes: tuple[str, ...]
    record: dict[str, Any]
    """The content of partition.json."""


def partition_cohort(pooled_dir: Path, out_dir: Path, rule: PartitionRule, *,
                     min_patients: int = DEFAULT_MIN_PATIENTS, small_sites: str = "external-test",
                     schema_path: Path | None = None,
                     progress: Callable[[str], None] | None = None) -> PartitionReport:
    """Split the pooled cohort in ``pooled_dir`` into site folders under ``out_dir`` (module docstring).

    ``ConfigError`` for a non-empty ``out_dir`` or bad arguments, ``DataError`` naming the file, column and
    patients for data that cannot be split; either is raised before anything is written.
    """
    pooled_dir, out_dir = Path(pooled_dir), Path(out_dir)
    if small_sites not in SMALL_SITE_RULES:
        raise ConfigError(f"small sites must go to one of {list(SMALL_SITE_RULES)}, got {small_sites!r}")
    if min_patients < 1:
        raise ConfigError(f"--min-patients must be >= 1, got {min_patients}")
    check_out_dir(out_dir, pooled_dir)
    cohort = read_pooled_cohort(pooled_dir, schema_path)
    assignment = assign_sites(rule, cohort.clinical, cohort.clinical_path)
    members: dict[str, list[str]] = {}
    for pid, site in assignment.site_of.items():
        members.setdefault(site, []).append(pid)
    small = sorted(name for name, patients in members.items() if len(patients) < min_patients)
    folders = {name: members[name] for name in sorted(members) if name not in small}
    if not folders:
        raise DataError(f"pooled cohort {pooled_dir}: no site has at least {min_patients} patients "
                        f"(sites {[(n, len(p)) for n, p in sorted(members.items())]}); lower --min-patients")
    if small and small_sites == "external-test":
        small_set = set(small)
        folders[EXTERNAL_TEST] = [pid for pid in cohort.patient_ids if assignment.site_of.get(pid) in small_set]
    for patients in folders.values():  # every sample the manifest names exists, before anything is written
        for table in cohort.omics:
            site_samples(cohort, patients, table)
    panels = _panel_files(cohort.schema_path)
    clash = sorted(name for name in folders if name.lower() in {Path(p).parts[0].lower() for p in panels})
    if clash:
        raise ConfigError(f"study schema {cohort.schema_path}: its panel files lie in {clash}, which is also a site's "
                          f"name; move the panels (e.g. beside the schema) or rename the site")
    summaries = {name: _summary(cohort, name, patients) for name, patients in members.items()}
    external = (_summary(cohort, EXTERNAL_TEST, folders[EXTERNAL_TEST], from_sites=tuple(small))
                if EXTERNAL_TEST in folders else None)
    report = PartitionReport(
        out_dir=out_dir, sites=tuple(summaries[n] for n in folders if n != EXTERNAL_TEST), external_test=external,
        small_sites_dropped=tuple(summaries[n] for n in small) if small_sites == "drop" else (),
        rule_dropped=len(assignment.dropped),
        notes=cohort.notes + assignment.notes + _small_notes(summaries, small, min_patients, small_sites),
        record={})
    report = replace(report, record=_record(cohort, rule, report, min_patients=min_patients,
                                            small_sites=small_sites, folders=folders))

    say = progress or (lambda _line: None)  # nothing was written until here
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_schema(cohort, out_dir, panels)
    for name, patients in folders.items():
        write_site_folder(cohort, out_dir, name, patients)
        say(f"wrote {out_dir / name} ({len(patients)} patients)")
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report.record, indent=2) + "\n")
    return report


def _panel_files(schema_path: Path) -> list[str]:
    """Relative panel file names the schema's ``[[omics]]`` layers read (absolute ones load from anywhere)."""
    raw = tomllib.loads(schema_path.read_text(encoding="utf-8"))  # load_schema already validated it
    names = []
    for i, layer in enumerate(raw.get("omics", [])):
        panel = layer.get("panel")
        if panel is None or Path(panel).is_absolute():
            continue
        if ".." in Path(panel).parts:
            raise ConfigError(f"study schema {schema_path}: omics[{i}] panel '{panel}' lies outside the schema's "
                              f"folder, so a copy of the schema would not find it; put it beside the schema")
        names.append(str(panel))
    return names


def _copy_schema(cohort: PooledCohort, out_dir: Path, panels: list[str]) -> None:
    for name in panels:
        atomic_write_bytes(out_dir / name, (cohort.schema_path.parent / name).read_bytes())
    copy = out_dir / SCHEMA_FILE
    atomic_write_bytes(copy, cohort.schema_path.read_bytes())
    if load_schema(copy).to_json() != cohort.schema.to_json():
        raise ConfigError(f"study schema {copy}: the copy does not load as the pooled schema does")


def _summary(cohort: PooledCohort, name: str, patients: list[str],
             from_sites: tuple[str, ...] = ()) -> SiteSummary:
    rows = cohort.clinical[cohort.clinical[PATIENT_ID].isin(set(patients))]
    events = {}
    for task in cohort.schema.survival_tasks:
        if task.event not in rows.columns:
            raise DataError(f"clinical table {cohort.clinical_path}: no column '{task.event}' (the event of task "
                            f"'{task.name}')")
        events[task.name] = sum(_is_event(v) for v in rows[task.event])
    split = cohort.schema.split_column
    splits = ({str(k): int(v) for k, v in rows[split].str.strip().value_counts().sort_index().items()}
              if split and split in rows.columns else {})
    return SiteSummary(name=name, patients=len(patients), events=events, splits=splits, from_sites=from_sites)


def _is_event(value: object) -> bool:
    try:
        return float(str(value).strip()) == 1.0
    except ValueError:
        return False


def _small_notes(summaries: dict[str, SiteSummary], small: list[str], min_patients: int,
                 small_sites: str) -> tuple[str, ...]:
    where = f"to {EXTERNAL_TEST}/" if small_sites == "external-test" else "dropped"
    return tuple(f"site {name}: {summaries[name].patients} patients, fewer than {min_patients}: {where}"
                 for name in small)


def _record(cohort: PooledCohort, rule: PartitionRule, report: PartitionReport, *, min_patients: int,
            small_sites: str, folders: dict[str, list[str]]) -> dict[str, Any]:
    def site(summary: SiteSummary) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": summary.name, "patients": summary.patients, "events": summary.events}
        if summary.splits:
            entry["splits"] = summary.splits
        if summary.from_sites:
            entry["from_sites"] = list(summary.from_sites)
        return entry

    small_dropped = sum(s.patients for s in report.small_sites_dropped)
    return {
        "format": "fedfusion-partition/1",
        "mode": rule_mode(rule),
        "arguments": {**rule.arguments(), "min_patients": min_patients, "small_sites": small_sites,
                      "schema": os.path.abspath(cohort.schema_path)},
        "seed": rule.seed if isinstance(rule, RandomSplit) else None,
        "pooled": {"folder": os.path.abspath(cohort.root), "patients": len(cohort.clinical),
                   "clinical_sha256": cohort.clinical_sha256, "schema_sha256": sha256_file(cohort.schema_path)},
        "sites": [site(s) for s in report.sites],
        "external_test": site(report.external_test) if report.external_test else None,
        "small_sites_dropped": [site(s) for s in report.small_sites_dropped],
        "dropped_patients": {"unmapped": report.rule_dropped, "small_sites": small_dropped,
                             "total": report.rule_dropped + small_dropped},
        "omics": [{"layer": t.layer, "file": t.relative_name, "samples_in_pooled": len(t.samples),
                   "samples_written": len({c for p in folders.values() for c in site_samples(cohort, p, t)})}
                  for t in cohort.omics],
        "notes": list(report.notes),
    }
