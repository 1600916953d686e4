"""Every bad input the site data path must survive: the exact message, with and without skip-bad, nothing half-written.

Each case breaks one thing in a copy of a small synthetic site (4 patients) and is run through the entry points:
``prepare_slide_features`` then ``load_site_cohort`` (``fedfusion site prepare``, then training) and
``fedfusion site check``. Without skip-bad the site stops with one message
naming the file and patient; with it, a skippable problem (a bad slide, a manifest patient without clinical
labels) is reported once and the rest of the cohort proceeds, while a malformed table still stops the site.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedfusion.atomic_io import TEMP_SUFFIX
from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.errors import DataError, SlideError
from fedfusion.study.config import StudyConfig
from tests.study_schemas import copy_schema

STUDY = StudyConfig()
KEPT_PATIENTS = 4
VICTIM = 1
"""Manifest row of the patient whose data is broken."""


@dataclass(frozen=True)
class Case:
    """How to break the site, and what must be said about it."""

    name: str
    breaks: Callable[[Path, str], str]
    """``(site_dir, victim patient id) -> the message naming the file and what is wrong``."""
    skippable: bool
    """True: skip-bad lets the rest proceed; False: the site stops anyway."""
    slide: bool = True


def _victim_slide(site: Path, pid: str) -> Path:
    return site / "slides" / f"{pid}.tiff"


def _truncated(site: Path, pid: str) -> str:
    slide = _victim_slide(site, pid)
    slide.write_bytes(slide.read_bytes()[:3000])
    return f"slide {slide}: file is truncated or corrupt (it starts like a TIFF"


def _not_a_slide(site: Path, pid: str) -> str:
    slide = _victim_slide(site, pid)
    slide.unlink()
    fake = slide.with_suffix(".svs")
    fake.write_text("patient_id,notes\nthis is a spreadsheet saved with a slide extension\n")
    _point_manifest(site, pid, "slides/" + fake.name)
    return f"slide {fake}: not a slide OpenSlide can read"


def _unreadable(site: Path, pid: str) -> str:
    slide = _victim_slide(site, pid)
    if os.geteuid() != 0:  # permissions do not stop root: then use a path no process can read as a file
        slide.chmod(0)
        return f"slide {slide}: file cannot be read (permission denied)"
    slide.unlink()
    slide.mkdir()
    return f"slide {slide}: not a regular file (a directory or device)"


def _zero_bytes(site: Path, pid: str) -> str:
    slide = _victim_slide(site, pid)
    slide.write_bytes(b"")
    return f"slide {slide}: file is empty (0 bytes)"


def _blank_slide(site: Path, pid: str) -> str:
    slide = _victim_slide(site, pid)
    glass = np.clip(244 + np.random.default_rng(0).normal(0, 3, (768, 768, 3)), 0, 255).astype(np.uint8)
    write_pyramid_tiff(slide, glass, 0.5, 2)
    return f"slide {slide}: no tissue tile among 9 (max background 60%)"


def _unknown_patient(site: Path, pid: str) -> str:
    clinical = pd.read_csv(site / "clinical.csv", dtype=str, keep_default_na=False)
    clinical[clinical["patient_id"] != pid].to_csv(site / "clinical.csv", index=False)
    return f"site {site.name}: patients ['{pid}'] are in manifest.csv but have no row in {site / 'clinical.csv'}"


def _malformed_table(site: Path, pid: str) -> str:
    path = site / "clinical.csv"
    path.write_text(path.read_text() + '"unterminated,quote\n1,2,3,4,5,6,7,8,9\n')
    return f"clinical table {path}: not a readable table"


CASES = [
    Case("truncated slide", _truncated, skippable=True),
    Case("non-slide file with a slide extension", _not_a_slide, skippable=True),
    Case("unreadable file", _unreadable, skippable=True),
    Case("empty file", _zero_bytes, skippable=True),
    Case("empty slide (no tissue)", _blank_slide, skippable=True),
    Case("patient id in manifest but not in clinical table", _unknown_patient, skippable=True, slide=False),
    Case("malformed table", _malformed_table, skippable=False, slide=False),
]


def _point_manifest(site: Path, pid: str, slides: str) -> None:
    manifest = pd.read_csv(site / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest["patient_id"] == pid, "slides"] = slides
    manifest.to_csv(site / "manifest.csv", index=False)


@pytest.fixture
def site(small_cohort: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A 4-patient copy of site-b (every one with a slide) next to copies of the study's gene lists."""
    site = tmp_path / "cohort" / "site-b"
    source = small_cohort / "site-b"
    manifest = pd.read_csv(source / "manifest.csv", dtype=str, keep_default_na=False)
    manifest = manifest[manifest["slides"] != ""].head(KEPT_PATIENTS)
    (site / "slides").mkdir(parents=True)
    for name in ("expression_tpm.csv", "copy_number.csv"):
        shutil.copy(source / name, site / name)
    clinical = pd.read_csv(source / "clinical.csv", dtype=str, keep_default_na=False)
    clinical[clinical["patient_id"].isin(manifest["patient_id"])].to_csv(site / "clinical.csv", index=False)
    for slides in manifest["slides"]:
        shutil.copy(source / slides, site / slides)
    manifest.to_csv(site / "manifest.csv", index=False)
    copy_schema(small_cohort, site.parent)
    return site, list(manifest["patient_id"])


def _load(site: Path, cache: Path, skip_bad: bool):
    """Prepare the site's slides (as its admin would, with the same skip-bad), then load it for training."""
    summary = prepare_slide_features(site, STUDY, cache_dir=cache, device="cpu", skip_bad=skip_bad)
    assert len(summary.failures) <= 1 and summary.ok == (skip_bad or not summary.failures)
    return load_site_cohort(site, STUDY, cache_dir=cache, skip_bad=skip_bad)


def _no_debris(cache: Path) -> None:
    assert not list(cache.parent.rglob(f"*{TEMP_SUFFIX}")), "an interrupted write left a .partial file"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_loader_stops_or_skips_with_one_clear_message(case: Case, site: tuple[Path, list[str]],
                                                      tmp_path: Path) -> None:
    site_dir, patients = site
    victim = patients[VICTIM]
    message = case.breaks(site_dir, victim)
    cache = tmp_path / "cache"
    with pytest.raises(SlideError if case.slide else DataError) as stopped:
        _load(site_dir, cache, skip_bad=False)
    assert message in str(stopped.value)
    _no_debris(cache)
    if not case.skippable:
        with pytest.raises(DataError, match="not a readable table"):
            _load(site_dir, cache, skip_bad=True)
        _no_debris(cache)
        return
    cohort = _load(site_dir, cache, skip_bad=True)
    said = [note for note in cohort.notes if message in note]
    assert len(said) == 1, cohort.notes
    if case.slide:
        assert said[0].startswith(f"skipped slide of patient {victim}: {message}")
    else:
        assert said[0].endswith("; skipped (no labels)")
    records = {r.patient_id: r for r in cohort.train + cohort.test}
    others = [p for p in patients if p != victim]
    assert all(records[p].tile_features is not None for p in others), "the rest of the cohort must proceed"
    if case.slide:
        assert records[victim].tile_features is None and records[victim].omics[0] is not None
        assert len(list(cache.glob("*.npy"))) == len(others)  # nothing cached for the bad slide
    else:
        assert victim not in records
    _no_debris(cache)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_site_check_reports_each_case_with_and_without_skip_bad(case: Case, site: tuple[Path, list[str]],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    site_dir, patients = site
    victim = patients[VICTIM]
    message = case.breaks(site_dir, victim)
    prefix = f"  - patient {victim}: " if case.slide else "  - "

    assert main(["site", "check", str(site_dir)]) == 1
    out = capsys.readouterr().out
    errors = out.split("errors:\n")[1].split("warnings:\n")[0]
    assert next(line for line in errors.splitlines() if message in line).startswith(prefix + message), out
    assert out.strip().endswith("errors, 0 warnings") and "FAILED: 1 errors" in out

    code = main(["site", "check", str(site_dir), "--skip-bad"])
    out = capsys.readouterr().out
    if not case.skippable:
        assert code == 1 and "FAILED" in out and message in out
        return
    assert code == 0 and "OK: 0 errors, 2 warnings" in out, out  # and: too few held-out patients to evaluate
    assert "fewer than 20 held out" in out
    warning = [line for line in out.splitlines() if message in line]
    assert len(warning) == 1 and warning[0].startswith(prefix + message)
    assert warning[0].endswith("skipped with --skip-bad (patient kept without this slide)" if case.slide
                               else "skipped (no labels)")
    assert not list(site_dir.rglob(".fedfusion-cache")), "site check must not write"
