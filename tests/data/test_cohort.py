"""Loading a site's cohort: join, missing modalities, split, prepared features, bad slides, and the planted signal.

Slide features are prepared first (``prepare_slide_features``, the step of ``fedfusion site prepare``); the loader
only reads them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedfusion.atomic_io import TEMP_SUFFIX
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import read_cohort_index, read_oracle
from fedfusion.data.patient_records import SiteCohort, SurvivalLabel
from fedfusion.data.patient_split import is_test_patient
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.errors import DataError, SlideError
from fedfusion.study.config import StudyConfig

STUDY = StudyConfig()


@pytest.fixture(scope="module")
def loaded(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Both sites prepared into a fresh cache, then loaded twice from it."""
    cache_root = tmp_path_factory.mktemp("feature-cache")
    index = read_cohort_index(small_cohort)
    started = time.perf_counter()
    for s in index.sites:
        assert prepare_slide_features(s.site_dir, STUDY, cache_dir=cache_root / s.name, device="cpu").ok
    extract_s = time.perf_counter() - started
    stamps = {p: p.stat().st_mtime_ns for p in cache_root.rglob("*")}
    started = time.perf_counter()
    first = {s.name: load_site_cohort(s.site_dir, STUDY, cache_dir=cache_root / s.name)
             for s in index.sites}
    second = {s.name: load_site_cohort(s.site_dir, STUDY, cache_dir=cache_root / s.name)
              for s in index.sites}
    return {"first": first, "second": second, "extract_s": extract_s,
            "cached_s": (time.perf_counter() - started) / 2, "stamps": stamps, "cache_root": cache_root}


def _records(cohorts: dict[str, SiteCohort]) -> list:
    return [r for c in cohorts.values() for r in c.train + c.test]


def test_records_join_all_modalities(loaded: dict, small_cohort: Path) -> None:
    cohorts: dict[str, SiteCohort] = loaded["first"]
    assert {n: c.num_patients for n, c in cohorts.items()} == {"site-a": 14, "site-b": 12}
    for name, cohort in cohorts.items():
        assert cohort.site == name
        assert all(not is_test_patient(r.patient_id, STUDY.seed, STUDY.test_fraction) for r in cohort.train)
        assert all(is_test_patient(r.patient_id, STUDY.seed, STUDY.test_fraction) for r in cohort.test)
    records = _records(cohorts)
    with_wsi = [r for r in records if r.tile_features is not None]
    assert len(with_wsi) >= 20
    assert all(r.tile_features.shape[1] == 64 and r.tile_features.dtype == np.float32 for r in with_wsi)
    expression = [r.omics[0] for r in records if r.omics[0] is not None]
    assert all(v.shape == (200,) and v.dtype == np.float32 for v in expression) and len(expression) >= 20
    survival = [r.labels[0] for r in records]
    assert all(r.clinical.shape == (2,) for r in records)
    assert all(isinstance(s, SurvivalLabel) and s.time > 0 and s.event in (0, 1) for s in survival)
    assert {r.labels[1].index for r in records} <= {0, 1, 2}
    manifest = (small_cohort / "site-a" / "manifest.csv").read_text().splitlines()
    no_slide = [line.split(",")[0] for line in manifest[1:] if line.split(",")[1] == ""]
    assert all(r.tile_features is None for r in records if r.patient_id in no_slide)


def test_loads_only_read_the_prepared_cache(loaded: dict) -> None:
    cache_root: Path = loaded["cache_root"]
    assert {p: p.stat().st_mtime_ns for p in cache_root.rglob("*")} == loaded["stamps"], "a load wrote the cache"
    assert not list(cache_root.rglob(f"*{TEMP_SUFFIX}"))
    assert all("slides read from the feature cache" in c.notes[-1] for c in loaded["second"].values())
    assert loaded["cached_s"] < loaded["extract_s"] / 3
    for first, second in zip(_records(loaded["first"]), _records(loaded["second"]), strict=True):
        if first.tile_features is not None:
            np.testing.assert_array_equal(first.tile_features, second.tile_features)


def test_features_show_the_planted_image_score(loaded: dict, small_cohort: Path) -> None:
    truth = read_oracle(small_cohort / "oracle.csv").set_index("patient_id")["image_score"]
    records = [r for r in _records(loaded["first"]) if r.tile_features is not None]
    x = np.stack([r.tile_features.mean(axis=0) for r in records])
    y = truth.loc[[r.patient_id for r in records]].to_numpy()
    probe = cross_val_predict(make_pipeline(StandardScaler(), Ridge(alpha=10.0)), x, y, cv=5)
    assert np.corrcoef(probe, y)[0, 1] > 0.6


def test_bad_slide_raises_or_is_skipped(small_cohort: Path, tmp_path: Path) -> None:
    site = shutil.copytree(small_cohort / "site-b", tmp_path / "site-b",
                           ignore=shutil.ignore_patterns(".fedfusion-cache"))
    victim = sorted((site / "slides").glob("*.tiff"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    stopped = prepare_slide_features(site, STUDY, device="cpu", workers=2)
    assert not stopped.ok and [f.slide for f in stopped.failures] == [victim]
    with pytest.raises(SlideError, match=victim.name):
        load_site_cohort(site, STUDY)
    assert prepare_slide_features(site, STUDY, device="cpu", workers=2, skip_bad=True).ok
    cohort = load_site_cohort(site, STUDY, skip_bad=True)
    assert any(victim.name in note and note.startswith("skipped slide") for note in cohort.notes)
    by_id = {r.patient_id: r for r in cohort.train + cohort.test}
    assert by_id[victim.stem].tile_features is None
    assert cohort.num_patients == 12
    prepare_slide_features(site, STUDY, cache_dir=tmp_path / "serial-cache", device="cpu", skip_bad=True)
    serial = load_site_cohort(site, STUDY, skip_bad=True, cache_dir=tmp_path / "serial-cache")
    for record in serial.train + serial.test:
        if record.tile_features is not None:
            np.testing.assert_allclose(by_id[record.patient_id].tile_features, record.tile_features, atol=1e-5)


def test_inconsistent_site_files(small_cohort: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-x"
    site.mkdir()
    shutil.copy(small_cohort / "site-a" / "clinical.csv", site / "clinical.csv")
    (site / "manifest.csv").write_text("patient_id,slides,omics_sample\nNOBODY,,\n")
    with pytest.raises(DataError, match=r"patients \['NOBODY'\] are in manifest.csv but have no row"):
        load_site_cohort(site, STUDY)
    (site / "manifest.csv").write_text("patient_id,slides,omics_sample\nSITE-A-P0001,,RNA-1\n")
    with pytest.raises(DataError, match="no expression table"):
        load_site_cohort(site, STUDY)


def test_copy_number_layer_joins_records_with_its_signal(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    prepare_slide_features(site.site_dir, STUDY, cache_dir=tmp_path / "cache", device="cpu")
    cohort = load_site_cohort(site.site_dir, STUDY,
                              cache_dir=tmp_path / "cache")
    records = cohort.train + cohort.test
    manifest = pd.read_csv(site.site_dir / "manifest.csv", dtype=str, keep_default_na=False).set_index("patient_id")
    for record in records:
        assert (record.omics[1] is None) == (manifest.at[record.patient_id, "cnv_sample"] == "")
    with_cnv = [r for r in records if r.omics[1] is not None]
    assert len(with_cnv) >= 10 and all(r.omics[1].shape == (40,) for r in with_cnv)
    truth = read_oracle(small_cohort / "oracle.csv").set_index("patient_id")["cnv_score"]
    amplicon = [r.omics[1][:10].mean() for r in with_cnv]
    assert np.corrcoef(amplicon, truth.loc[[r.patient_id for r in with_cnv]])[0, 1] > 0.8
