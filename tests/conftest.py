"""Shared fixtures of the data tests: a small synthetic cohort (generated once per session) and the real slides."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedfusion.data.synthetic import generate_cohort

REAL_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
SMALL_COHORT = {"num_sites": 2, "seed": 3, "patients_per_site": (14, 12), "slide_size_px": 1024}


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-site synthetic cohort (14 + 12 patients, 1024 px slides), read-only by convention."""
    return generate_cohort(tmp_path_factory.mktemp("cohort"), **SMALL_COHORT)


@pytest.fixture(scope="session")
def real_slides() -> Path:
    """The shared folder of small real slides; tests using it skip when it is absent."""
    if not REAL_SLIDES.is_dir():
        pytest.skip(f"real slides not available at {REAL_SLIDES}")
    return REAL_SLIDES


@pytest.fixture(scope="session")
def radiogenomic_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-site radiogenomic cohort (8 + 6 patients, a CT series + NIfTI mask each), read-only by convention."""
    return generate_cohort(tmp_path_factory.mktemp("radiogenomic"), num_sites=2, seed=7, patients_per_site=(8, 6),
                           radiology=True, workers=1)
