"""The synthetic cohort generator: files on disk, reuse, determinism and the planted signal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
from conftest import SMALL_COHORT
from lifelines.utils import concordance_index

from fedfusion.atomic_io import TEMP_SUFFIX
from fedfusion.data.cohort_index import SCHEMA_FILE, read_cohort_index, read_oracle
from fedfusion.data.synthetic import generate_cohort
from fedfusion.data.synthetic.copy_number import cnv_panel
from fedfusion.data.synthetic.expression import gene_panel
from fedfusion.data.synthetic.patients import AGE_MEAN_YEARS, AGE_SCALE_YEARS, SUBTYPES, simulate_patients
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.errors import ConfigError
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE
from fedfusion.study.schema import load_schema


def test_layout_and_index(small_cohort: Path) -> None:
    index = read_cohort_index(small_cohort)
    assert [s.name for s in index.sites] == ["site-a", "site-b"]
    assert [s.num_patients for s in index.sites] == [14, 12]
    schema = load_schema(small_cohort / SCHEMA_FILE)
    assert schema == load_schema(SYNTHETIC_SCHEMA_FILE)
    expression, copy_number = schema.omics
    assert list(expression.genes) == gene_panel() and list(copy_number.genes) == cnv_panel()
    assert schema.tasks[1].classes == SUBTYPES
    age = schema.covariates[0]
    assert (age.name, age.center, age.scale) == ("age", AGE_MEAN_YEARS, AGE_SCALE_YEARS)
    for site in index.sites:
        manifest = pd.read_csv(site.site_dir / "manifest.csv", dtype=str, keep_default_na=False)
        clinical = pd.read_csv(site.site_dir / "clinical.csv")
        expression = pd.read_csv(site.site_dir / "expression_tpm.csv", index_col="gene_id")
        assert list(manifest.patient_id) == list(clinical.patient_id)
        assert len(manifest) == site.num_patients
        samples = [s for s in manifest.omics_sample if s]
        assert sorted(samples) == sorted(expression.columns)
        assert (expression.to_numpy() >= 0).all()
        for slides in manifest.slides:
            for rel in filter(None, slides.split(";")):
                assert (site.site_dir / rel).is_file()
    oracle = read_oracle(index.oracle_path)
    assert len(oracle) == 26 and not (small_cohort / "site-a" / "oracle.csv").exists()
    assert not list(small_cohort.rglob(f"*{TEMP_SUFFIX}"))


def test_slides_open_in_openslide_with_mpp_and_levels(small_cohort: Path) -> None:
    slide_path = next((small_cohort / "site-a" / "slides").glob("*.tiff"))
    with openslide.OpenSlide(slide_path) as slide:
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)
        assert slide.level_dimensions == ((1024, 1024), (512, 512), (256, 256))
        region = np.asarray(slide.read_region((0, 0), 2, (256, 256)))
        assert region[..., 3].min() == 255


def test_reuse_skips_regeneration_and_refuses_other_params(small_cohort: Path) -> None:
    index_file = small_cohort / "cohort.json"
    stamps = {p: p.stat().st_mtime_ns for p in small_cohort.rglob("*") if p.is_file()}
    messages: list[str] = []
    generate_cohort(small_cohort, **SMALL_COHORT, progress=messages.append)
    assert {p: p.stat().st_mtime_ns for p in small_cohort.rglob("*") if p.is_file()} == stamps
    assert any("reusing" in m for m in messages)
    assert json.loads(index_file.read_text())["params"]["seed"] == SMALL_COHORT["seed"]
    with pytest.raises(ConfigError, match="already holds a cohort"):
        generate_cohort(small_cohort, **{**SMALL_COHORT, "seed": 99})


def test_deterministic_given_seed(tmp_path: Path) -> None:
    params = {"num_sites": 1, "seed": 5, "patients_per_site": (3,), "slide_size_px": 512, "workers": 1}
    first, second = generate_cohort(tmp_path / "one", **params), generate_cohort(tmp_path / "two", **params)
    for rel in ["cohort.json", "oracle.csv", "site-a/manifest.csv", "site-a/clinical.csv",
                "site-a/expression_tpm.csv", "site-a/slides/SITE-A-P0001.tiff"]:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_small_cohort_oracle_ranks_survival(small_cohort: Path) -> None:
    oracle = read_oracle(small_cohort / "oracle.csv")
    clinical = pd.concat([pd.read_csv(small_cohort / s / "clinical.csv") for s in ("site-a", "site-b")])
    joined = oracle.merge(clinical, on="patient_id")
    c_index = concordance_index(joined.survival_months, -joined.oracle_risk, joined.event)
    assert c_index > 0.75


def test_planted_signal_needs_all_modalities_and_sites_differ() -> None:
    """On a large draw: each modality alone ranks patients, all three together clearly better; ~1/3 censored."""
    profiles = draw_site_profiles(3, None, np.random.default_rng(0))
    truths = [simulate_patients(dataclasses.replace(p, num_patients=3000), np.random.default_rng(i))
              for i, p in enumerate(profiles)]
    time = np.concatenate([t.time_months for t in truths])
    event = np.concatenate([t.event for t in truths])
    def c(score: np.ndarray) -> float:
        return concordance_index(time, -score, event)
    c_all = c(np.concatenate([t.log_risk for t in truths]))
    singles = [c(np.concatenate([getattr(t, name) for t in truths]))
               for name in ("image_score", "omics_score", "age_z")]
    assert all(0.58 < s < c_all - 0.08 for s in singles), (c_all, singles)
    assert c_all > 0.78
    assert 0.25 < 1 - event.mean() < 0.45
    assert len({p.subtype_probs for p in profiles}) == 3 and len({p.stain_intensity for p in profiles}) == 3
    missing = 1 - np.concatenate([t.has_slide for t in truths]).mean()
    assert 0.01 < missing < 0.06
