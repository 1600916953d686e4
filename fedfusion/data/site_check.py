"""``fedfusion site check``'s engine: validate a site's data without training and without writing anything.

Reads the tables with the same validation as the cohort loader (``site_tables``), opens every slide, reads one
small region (``slides.probe_slide``), checks that its resolution reaches the study's target and that its tissue
mask keeps at least one tile (``tiling``), and collects every problem instead of stopping at the first. With
``skip_bad`` the problems the loader would skip (bad slides, manifest patients without clinical labels) are
warnings, as they would be when training with ``skip-bad``. Each slide is read under a time limit
(``slide_limits``: implausible sizes are refused before reading; dark-background slides are refused by
``tiling``). A site with too few patients to train (``MIN_TRAIN_PATIENTS``) is an error, one with too few held-out
patients for an evaluation reply (``MIN_EVAL_PATIENTS``) a warning.

A study that fuses radiology also gets every volume and its mask read the way ``site prepare`` does (series checks,
mask alignment, the study's crop and features): each unusable one is a one-line finding naming its patient and file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfusion.data.findings import Findings
from fedfusion.data.patient_split import PatientSplit
from fedfusion.data.radiology.prepare import check_volume, volume_owners
from fedfusion.data.slides.slide_limits import ReadBudget
from fedfusion.data.slides.slide_reader import probe_slide
from fedfusion.data.slides.tiling import TilingParams, check_reaches_target, plan_tiles, require_tissue
from fedfusion.data.tables.site_tables import SiteTables, read_site_tables
from fedfusion.errors import SlideError, VolumeError
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import RadiologySpec, StudySchema

SKIPPED = "skipped with --skip-bad (patient kept without this slide)"
MIN_TRAIN_PATIENTS = 2
"""Fewer training patients than this cannot train (an error)."""
MIN_EVAL_PATIENTS = 20
"""Fewer held-out patients than this: a site policy at its default ``min-eval-patients`` refuses evaluation replies
(a warning: the site can still train)."""
CHECK_SLIDE_SECONDS = 300.0
"""Default time limit of one slide's check (probe and tissue mask)."""


@dataclass(frozen=True)
class SiteCheck:
    """What ``check_site`` found: per-modality counts, patients lacking a modality, and every problem."""

    site_dir: Path
    patients: list[str]
    """Every patient id named in manifest.csv or clinical.csv."""
    lacking: dict[str, list[str]]
    """Input (``site_inputs``: slides, each omics layer, clinical) -> patients without it (kept by the loader; the
    model masks the modality; without clinical data a patient has no labels)."""
    slides_checked: int
    slides_unreadable: int
    findings: Findings

    @property
    def ok(self) -> bool:
        """True when nothing blocks loading the site (warnings allowed)."""
        return not self.findings.errors

    def count(self, modality: str) -> int:
        """Patients that have ``modality``."""
        return len(self.patients) - len(self.lacking[modality])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (patient ids stay on the site machine: this is for the site admin)."""
        return {
            "site_dir": str(self.site_dir), "ok": self.ok, "patients": len(self.patients),
            "with": {m: self.count(m) for m in self.lacking}, "lacking": self.lacking,
            "slides_checked": self.slides_checked, "slides_unreadable": self.slides_unreadable,
            "errors": [{"where": f.where, "message": f.message} for f in self.findings.errors],
            "warnings": [{"where": f.where, "message": f.message} for f in self.findings.warnings],
        }


def site_inputs(schema: StudySchema) -> tuple[str, ...]:
    """The inputs a site check counts per patient: slides (when the study fuses them), each omics layer, clinical."""
    slides = ("slides",) if "wsi" in schema.modalities else ()
    radiology = ("radiology",) if "radiology" in schema.modalities else ()
    return (*slides, *(layer.name for layer in schema.omics), "clinical", *radiology)


def check_site(site_dir: Path, schema: StudySchema, fallback_mpp: float | None = None, *,
               params: TilingParams | None = None, skip_bad: bool = False,
               slide_seconds: float | None = CHECK_SLIDE_SECONDS, split: PatientSplit | None = None,
               min_eval_patients: int = MIN_EVAL_PATIENTS) -> SiteCheck:
    """Validate the site folder ``site_dir`` against the study ``schema`` (tables, cross-references, every slide)
    and collect all problems.

    ``params`` are the study's tiling knobs (target resolution, tile size, background rule) the slides must meet;
    by default those of a default ``StudyConfig``. ``slide_seconds`` limits the time one slide may take (None: no
    limit); a slide past it is a problem naming the slide. Patients are counted per split as training would split
    them with ``split`` (the site policy's; default: the default policy's, i.e. the default study's hash rule and the
    schema's split column), against ``min_eval_patients`` held out (the site policy's ``min-eval-patients``).
    """
    if params is None:
        params = TilingParams.from_study(StudyConfig())
    findings = Findings()
    if not site_dir.is_dir():
        findings.error(f"site {site_dir.name}", f"directory {site_dir} does not exist")
        return SiteCheck(site_dir, [], {m: [] for m in site_inputs(schema)}, 0, 0, findings)
    tables = read_site_tables(site_dir, schema, findings, skip_bad=skip_bad)
    checked, unreadable = (_check_slides(tables, fallback_mpp, params, findings, skip_bad, slide_seconds)
                           if "wsi" in schema.modalities else (0, 0))
    lacking = {"slides": [e.patient_id for e in tables.entries if not e.slides]} if "wsi" in schema.modalities else {}
    lacking.update({layer.name: [e.patient_id for e in tables.entries if layer.name not in e.samples]
                    for layer in schema.omics})
    lacking["clinical"] = [e.patient_id for e in tables.entries if e.patient_id not in tables.clinical]
    if "radiology" in schema.modalities and schema.radiology is not None:
        lacking["radiology"] = [e.patient_id for e in tables.entries if not e.volumes]
        _check_volumes(tables, schema.radiology, findings, skip_bad)
    if not findings.errors:
        _check_patient_counts(f"site {site_dir.name}", tables, findings,
                              split or PatientSplit.of_study(StudyConfig()), min_eval_patients)
    return SiteCheck(site_dir, [e.patient_id for e in tables.entries], lacking, checked, unreadable, findings)


def check_slide(path: Path, fallback_mpp: float | None, params: TilingParams,
                slide_seconds: float | None = CHECK_SLIDE_SECONDS) -> None:
    """Raise ``SlideError`` naming the slide if training could not use it (implausible size, unreadable, too coarse,
    not brightfield, no tissue, or not read within ``slide_seconds``)."""
    budget = ReadBudget(path, slide_seconds)
    mpp = probe_slide(path, fallback_mpp)
    check_reaches_target(path, mpp, params.target_mpp)
    require_tissue(plan_tiles(path, params, fallback_mpp, budget))


def _check_patient_counts(where: str, tables: SiteTables, findings: Findings, split: PatientSplit,
                          min_eval_patients: int) -> None:
    """An error below ``MIN_TRAIN_PATIENTS`` training patients, a warning below ``min_eval_patients`` held out."""
    splits = [(row.split if split.use_split_column else None) or ("test" if split.is_test(row.patient_id)
                                                                   else "train")
              for row in (tables.clinical[e.patient_id] for e in tables.entries if e.patient_id in tables.clinical)]
    train, test = splits.count("train"), splits.count("test")
    counts = f"{len(splits)} usable patients, {train} for training and {test} held out"
    if train < MIN_TRAIN_PATIENTS:
        findings.error(where, f"{counts}: a site needs at least {MIN_TRAIN_PATIENTS} training patients to train")
    if test < min_eval_patients:
        findings.warning(where, f"{counts}: fewer than {min_eval_patients} held out (the site policy's "
                                "min-eval-patients), so its evaluation replies would be refused")


def _check_slides(tables: SiteTables, fallback_mpp: float | None, params: TilingParams, findings: Findings,
                  skip_bad: bool, slide_seconds: float | None) -> tuple[int, int]:
    """Check every slide of the manifest once; record each unusable one under its patient."""
    checked = unreadable = 0
    seen: set[Path] = set()
    for entry in tables.entries:
        for path in entry.slides:
            if path in seen:
                continue
            seen.add(path)
            checked += 1
            try:
                check_slide(path, fallback_mpp, params, slide_seconds)
            except SlideError as error:
                unreadable += 1
                if skip_bad:
                    findings.warning(f"patient {entry.patient_id}", f"{error}; {SKIPPED}")
                else:
                    findings.error(f"patient {entry.patient_id}", str(error))
    return checked, unreadable


def _check_volumes(tables: SiteTables, spec: RadiologySpec, findings: Findings, skip_bad: bool) -> None:
    """Read every (volume, mask) of the manifest once as ``site prepare`` would; record each unusable one under its
    patient (a warning with ``skip_bad``: the patient is kept, radiology masked)."""
    for (volume, mask), patient in volume_owners(tables.entries).items():
        try:
            check_volume(volume, mask, spec)
        except VolumeError as error:
            if skip_bad:
                findings.warning(f"patient {patient}", f"{error}; skipped with --skip-bad (patient kept without "
                                                       "this volume)")
            else:
                findings.error(f"patient {patient}", str(error))
