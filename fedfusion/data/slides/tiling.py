"""Tile grid of a slide at the study's resolution, and streaming of the kept tissue tiles.

A tile covers ``tile_size`` pixels at ``target_mpp`` microns per pixel. It is read from the coarsest pyramid
level that is at least as fine as the target and resized to ``tile_size``; tiles whose background fraction
(from the tissue mask) exceeds ``max_background`` are dropped. Tiles are read one at a time, so memory stays
bounded whatever the slide size. A slide with a dark background (fluorescence, dark field) is refused unless the
study allows non-brightfield slides; a ``ReadBudget`` bounds the time reading one slide may take.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from fedfusion.data.slides.slide_limits import ReadBudget
from fedfusion.data.slides.slide_reader import open_slide, read_rgb, slide_mpp
from fedfusion.data.slides.tissue_mask import detect_tissue
from fedfusion.errors import SlideError
from fedfusion.study.config import StudyConfig

MPP_TOLERANCE = 0.05
"""Relative slack when comparing resolutions: a 20x scan at 0.503 um/px still serves a 0.5 um/px target."""
MASK_PIXELS_PER_TILE = 16
"""Tissue-mask resolution: about this many mask pixels along one tile side."""
DARK_BACKGROUND = 80
"""A thumbnail whose median grey level (0-255) is below this is not a brightfield scan (real H&E slides: 150-245)."""


@dataclass(frozen=True)
class TilingParams:
    """The study knobs that define a tile (all sites use the same)."""

    tile_size: int
    target_mpp: float
    max_background: float
    stain_normalization: str = StudyConfig.stain_normalization
    """Colour normalisation of each tile (``fedfusion.data.slides.stain.reinhard``), or 'none'."""
    allow_non_brightfield: bool = StudyConfig.allow_non_brightfield
    """Accept slides with a dark background (fluorescence); refused by default."""

    @classmethod
    def from_study(cls, study: StudyConfig) -> TilingParams:
        """The tiling knobs of a study."""
        return cls(tile_size=study.tile_size, target_mpp=study.target_mpp, max_background=study.max_background,
                   stain_normalization=study.stain_normalization,
                   allow_non_brightfield=study.allow_non_brightfield)


@dataclass(frozen=True)
class TilePlan:
    """Where a slide's kept tiles are and how to read them."""

    path: Path
    params: TilingParams
    mpp: float
    """Level-0 microns per pixel used (from metadata, or the caller's fallback)."""
    level: int
    """Pyramid level the tiles are read from."""
    read_size: int
    """Tile side in pixels of ``level`` before resizing to ``tile_size``."""
    coords: npt.NDArray[np.int64]
    """``[num_kept, 2]`` int64 level-0 (x, y) of each kept tile's top-left corner, row-major grid order."""
    grid_shape: tuple[int, int]
    """(rows, cols) of the full tile grid before the background rule."""

    @property
    def num_candidates(self) -> int:
        """Tiles in the full grid."""
        return self.grid_shape[0] * self.grid_shape[1]


def plan_tiles(path: Path, params: TilingParams, fallback_mpp: float | None = None,
               budget: ReadBudget | None = None) -> TilePlan:
    """Open a slide, pick the pyramid level, lay the tile grid and keep the tiles with enough tissue.

    Raises ``SlideError`` naming the slide when it is not brightfield (and ``params`` do not allow that) or when
    building its tissue mask runs past ``budget``.
    """
    with open_slide(path) as slide:
        mpp = slide_mpp(slide, path, fallback_mpp)
        check_reaches_target(path, mpp, params.target_mpp)
        level = _pick_level(slide.level_downsamples, mpp, params.target_mpp)
        level_ds = float(slide.level_downsamples[level])
        stride0 = params.tile_size * params.target_mpp / mpp
        read_size = max(1, round(stride0 / level_ds))
        width0, height0 = slide.dimensions
        cols, rows = math.floor(width0 / stride0 + 1e-6), math.floor(height0 / stride0 + 1e-6)
        if rows == 0 or cols == 0:
            raise SlideError(f"slide {path}: {width0}x{height0} px is smaller than one tile "
                             f"({params.tile_size} px at {params.target_mpp} um/px)")
        tissue = detect_tissue(slide, path, max(1.0, stride0 / MASK_PIXELS_PER_TILE), budget)
        if tissue.brightness < DARK_BACKGROUND and not params.allow_non_brightfield:
            raise SlideError(f"slide {path}: dark background (median grey level {tissue.brightness:.0f} of 255, "
                             f"below {DARK_BACKGROUND}): a fluorescence or dark-field scan, not brightfield H&E; "
                             "refused unless the study sets allow-non-brightfield = true")
        kept = [(round(c * stride0), round(r * stride0))
                for r in range(rows) for c in range(cols)
                if tissue.background_fraction(c * stride0, r * stride0, stride0) <= params.max_background]
    coords = np.asarray(kept, dtype=np.int64).reshape(-1, 2)
    return TilePlan(path=path, params=params, mpp=mpp, level=level, read_size=read_size, coords=coords,
                    grid_shape=(rows, cols))


def require_tissue(plan: TilePlan) -> TilePlan:
    """``plan`` if it keeps at least one tile, else ``SlideError`` naming the slide (an empty or blank slide)."""
    if len(plan.coords) == 0:
        raise SlideError(f"slide {plan.path}: no tissue tile among {plan.num_candidates} "
                         f"(max background {plan.params.max_background:.0%})")
    return plan


def check_reaches_target(path: Path, mpp: float, target_mpp: float) -> None:
    """Raise ``SlideError`` naming the slide when its finest level (``mpp``) is coarser than the study's target."""
    if mpp > target_mpp * (1 + MPP_TOLERANCE):
        raise SlideError(f"slide {path}: scanned at {mpp:.3f} um/px, coarser than the study's target "
                         f"{target_mpp} um/px (tiles would have to be upsampled)")


def iter_tiles(plan: TilePlan, indices: Sequence[int] | None = None,
               budget: ReadBudget | None = None) -> Iterator[npt.NDArray[np.uint8]]:
    """Yield each kept tile of ``plan`` (or those at ``indices``) as ``[tile_size, tile_size, 3]`` uint8 RGB.

    Tiles are read one at a time, as stored in the slide (colour normalisation is ``slide_features``' step);
    ``budget`` is checked before each.
    """
    size = plan.params.tile_size
    coords = plan.coords if indices is None else plan.coords[np.asarray(indices, dtype=np.int64)]
    with open_slide(plan.path) as slide:
        for index, (x, y) in enumerate(coords):
            if budget is not None:
                budget.tick("tiles", index, len(coords))
            rgb = read_rgb(slide, plan.path, (int(x), int(y)), plan.level, (plan.read_size, plan.read_size))
            if plan.read_size != size:
                rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
            yield rgb


def batched(tiles: Iterable[npt.NDArray[np.uint8]], batch_size: int) -> Iterator[npt.NDArray[np.uint8]]:
    """Stack ``tiles`` into ``[<=batch_size, tile_size, tile_size, 3]`` uint8 batches."""
    batch: list[npt.NDArray[np.uint8]] = []
    for tile in tiles:
        batch.append(tile)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _pick_level(downsamples: tuple[float, ...], mpp: float, target_mpp: float) -> int:
    """The coarsest level whose resolution is at least as fine as the target (within tolerance)."""
    fine_enough = [i for i, ds in enumerate(downsamples) if mpp * ds <= target_mpp * (1 + MPP_TOLERANCE)]
    return max(fine_enough, key=lambda i: downsamples[i]) if fine_enough else 0
