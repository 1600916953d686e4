"""Slide tiling: level choice, tissue mask, background rule, real vendor slides, and unreadable slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedfusion.data.slides.slide_features import extract_slide_features
from fedfusion.data.slides.tiling import TilingParams, iter_tiles, plan_tiles
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.errors import SlideError

PARAMS = TilingParams(tile_size=256, target_mpp=0.5, max_background=0.6)


@pytest.fixture(scope="module")
def half_tissue_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1024 px at 0.5 um/px: tissue (pink) in x < 640, white glass elsewhere; tile column 2 is half tissue."""
    rgb = np.full((1024, 1024, 3), 245, dtype=np.uint8)
    rgb[:, :640] = (200, 110, 170)
    path = tmp_path_factory.mktemp("slides") / "half.tiff"
    write_pyramid_tiff(path, rgb, mpp=0.5, levels=3)
    return path


@pytest.mark.parametrize(("max_background", "kept_columns"), [(0.6, 3), (0.4, 2), (1.0, 4), (0.0, 2)])
def test_background_rule(half_tissue_slide: Path, max_background: float, kept_columns: int) -> None:
    plan = plan_tiles(half_tissue_slide, TilingParams(256, 0.5, max_background))
    assert plan.grid_shape == (4, 4)
    assert len(plan.coords) == 4 * kept_columns
    assert set(plan.coords[:, 0]) == {256 * c for c in range(kept_columns)}


def test_level_choice_and_tile_pixels(half_tissue_slide: Path) -> None:
    coarse = plan_tiles(half_tissue_slide, TilingParams(256, 1.0, 0.6))
    assert (coarse.level, coarse.read_size, coarse.grid_shape) == (1, 256, (2, 2))
    tiles = list(iter_tiles(coarse))
    assert len(tiles) == 2 and all(t.shape == (256, 256, 3) and t.dtype == np.uint8 for t in tiles)
    assert abs(int(tiles[0][10, 10, 0]) - 200) < 12  # pink tissue read back through JPEG
    between = plan_tiles(half_tissue_slide, TilingParams(128, 0.75, 0.6))  # no level at 0.75: read finer, resize
    assert between.level == 0 and between.read_size == 192
    assert next(iter_tiles(between)).shape == (128, 128, 3)
    with pytest.raises(SlideError, match="coarser than the study's target"):
        plan_tiles(half_tissue_slide, TilingParams(256, 0.25, 0.6))


def test_synthetic_slide_keeps_part_of_grid(small_cohort: Path) -> None:
    plan = plan_tiles(next((small_cohort / "site-a" / "slides").glob("*.tiff")), PARAMS)
    assert plan.mpp == pytest.approx(0.5) and plan.level == 0 and plan.num_candidates == 16
    assert 0 < len(plan.coords) < 16
    strict = plan_tiles(plan.path, TilingParams(256, 0.5, 0.1))
    assert len(strict.coords) <= len(plan.coords)


@pytest.mark.parametrize(("name", "low", "high"), [
    ("aperio/CMU-1-Small-Region.svs", 25, 36),
    ("generic-tiff/CMU-1-Small-Region_pyramid_jpeg.tiff", 25, 36),
])
def test_real_slides_with_mpp(real_slides: Path, name: str, low: int, high: int) -> None:
    plan = plan_tiles(real_slides / name, PARAMS)
    assert plan.mpp == pytest.approx(0.499)
    assert plan.num_candidates == 88
    assert low <= len(plan.coords) <= high


def test_real_slide_without_mpp_needs_explicit_fallback(real_slides: Path) -> None:
    path = real_slides / "aperio/TCGA-CR-7395-01A-01-TS1.svs"
    with pytest.raises(SlideError, match="no microns-per-pixel metadata") as info:
        plan_tiles(path, PARAMS)
    assert str(path) in str(info.value)
    plan = plan_tiles(path, PARAMS, fallback_mpp=0.5)
    assert plan.num_candidates == 221 and 140 <= len(plan.coords) <= 170


def test_text_file_named_svs_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.svs"
    fake.write_text("patient notes, not a slide\n")
    with pytest.raises(SlideError, match="not a slide OpenSlide can read") as info:
        plan_tiles(fake, PARAMS)
    assert str(fake) in str(info.value)


@pytest.mark.parametrize("keep_fraction", [0.33, 0.95])
def test_truncated_slide_is_refused(small_cohort: Path, tmp_path: Path, keep_fraction: float) -> None:
    source = next((small_cohort / "site-b" / "slides").glob("*.tiff"))
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep_fraction)])
    with pytest.raises(SlideError, match="file is truncated or corrupt") as info:
        extract_slide_features(truncated, PARAMS, "random-conv-v1")
    assert str(truncated) in str(info.value)


def test_missing_slide_file(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="does not exist"):
        plan_tiles(tmp_path / "absent.svs", PARAMS)
