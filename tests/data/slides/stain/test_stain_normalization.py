"""Reinhard and Macenko stain normalisation: a stain-shifted slide's tiles move to the study target, as uint8."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.slide_features import slide_tiles
from fedfusion.data.slides.stain.macenko import OD_THRESHOLD, TARGET_STAINS, estimate_stains, optical_density
from fedfusion.data.slides.stain.reinhard import TARGET_LAB_MEAN, TISSUE_MAX_L, lab_to_rgb, rgb_to_lab
from fedfusion.data.slides.tiling import TilingParams, plan_tiles
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig


@pytest.fixture(scope="module")
def shifted_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 768 px synthetic slide stained far bluer and stronger than usual."""
    profile = draw_site_profiles(1, (1,), np.random.default_rng(0))[0]
    profile = dataclasses.replace(profile, hematoxylin_od=(0.9, 0.5, 0.1), eosin_od=(0.2, 0.9, 0.3),
                                  stain_intensity=1.5)
    path = tmp_path_factory.mktemp("stain") / "shifted.tiff"
    write_pyramid_tiff(path, render_slide(768, 0.5, profile, np.random.default_rng(1)), 0.5, 2)
    return path


def _distance_to_target(tiles: list[np.ndarray]) -> float:
    lab = np.concatenate([rgb_to_lab(t).reshape(-1, 3) for t in tiles])
    return float(np.linalg.norm(lab[lab[:, 0] <= TISSUE_MAX_L].mean(axis=0) - TARGET_LAB_MEAN))


def test_shifted_slide_moves_to_target(shifted_slide: Path) -> None:
    plan = plan_tiles(shifted_slide, TilingParams(256, 0.5, 0.6, "reinhard"))
    raw = list(slide_tiles(dataclasses.replace(plan, params=TilingParams(256, 0.5, 0.6, "none"))))
    normalised = list(slide_tiles(plan))
    assert len(raw) == len(normalised) >= 3
    before, after = _distance_to_target(raw), _distance_to_target(normalised)
    assert before > 20 and after < before / 4, (before, after)
    for tile, out in zip(raw, normalised, strict=True):
        assert out.dtype == np.uint8 and out.shape == tile.shape == (256, 256, 3)
    background = rgb_to_lab(raw[0])[..., 0] > TISSUE_MAX_L
    np.testing.assert_array_equal(normalised[0][background], raw[0][background])


def test_lab_round_trip_and_reference_white() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (500, 3)).astype(np.uint8)
    np.testing.assert_array_equal(lab_to_rgb(rgb_to_lab(rgb)), rgb)
    np.testing.assert_allclose(rgb_to_lab(np.array([255, 255, 255], np.uint8)), [100.0, 0.0, 0.0], atol=0.01)


def test_knob_is_validated_and_keys_the_cache(shifted_slide: Path, tmp_path: Path) -> None:
    assert TilingParams.from_study(StudyConfig(stain_normalization="reinhard")).stain_normalization == "reinhard"
    with pytest.raises(ConfigError, match="'stain-normalization' must be one of"):
        StudyConfig(stain_normalization="vahadane")
    cache = FeatureCache(tmp_path)
    keys = {cache.key(shifted_slide, "random-conv-v1", TilingParams(256, 0.5, 0.6, method), None)
            for method in ("reinhard", "macenko", "none")}
    assert len(keys) == 3


def _stain_angles_to_target(tiles: list[np.ndarray]) -> np.ndarray:
    """Angle (degrees) between the tiles' estimated H and E vectors and the study's target ones."""
    estimate = estimate_stains(tiles)
    assert estimate is not None
    cosines = np.sum(estimate.stains * TARGET_STAINS / np.linalg.norm(TARGET_STAINS, axis=0), axis=0)
    return np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0)))


def test_macenko_moves_shifted_stains_to_target(shifted_slide: Path) -> None:
    plan = plan_tiles(shifted_slide, TilingParams(256, 0.5, 0.6, "macenko"))
    raw = list(slide_tiles(dataclasses.replace(plan, params=TilingParams(256, 0.5, 0.6, "none"))))
    normalised = list(slide_tiles(plan))
    assert len(raw) == len(normalised) >= 3
    before, after = _stain_angles_to_target(raw), _stain_angles_to_target(normalised)
    assert before.max() > 10 and after.max() < 4 and after.max() < before.max() / 3, (before, after)
    for tile, out in zip(raw, normalised, strict=True):
        assert out.dtype == np.uint8 and out.shape == tile.shape == (256, 256, 3)
    background = np.all(optical_density(raw[0]) < OD_THRESHOLD, axis=-1)
    assert background.any()
    np.testing.assert_array_equal(normalised[0][background], raw[0][background])
