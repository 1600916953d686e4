"""Tile features of one slide: tile plan, streamed (colour-normalised) tiles, encoder batches.

Tiles are read, normalised and stacked into batches in a reader thread (``prefetch``) while this thread encodes
the previous batch, so a slide takes about max(read, encode) rather than their sum. Batches and their order are
the same as reading and encoding one after the other, so the features are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from fedfusion.data.progress import progress_bar
from fedfusion.data.slides.prefetch import prefetched
from fedfusion.data.slides.slide_limits import ReadBudget
from fedfusion.data.slides.stain.macenko import estimate_stains, macenko_normalize
from fedfusion.data.slides.stain.reinhard import reinhard_normalize, tissue_lab_stats
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.data.slides.tiling import TilePlan, TilingParams, batched, iter_tiles, plan_tiles, require_tissue
from fedfusion.errors import SlideError

ENCODE_BATCH = 8
"""Tiles encoded at once on the CPU (small batches were fastest; memory stays at a few MB of pixels and
activations)."""
DEVICE_BATCH = 64
"""Tiles encoded at once on a GPU (a few MB of pixels: large enough to keep the device busy)."""
PREFETCH_BATCHES = 2
"""Batches the reader thread may have ready ahead of the encoder."""
STAIN_SAMPLE_TILES = 8
"""Tiles a slide's stain statistics are estimated from."""


def extract_slide_features(path: Path, params: TilingParams, encoder_name: str, device: str = "cpu",
                           fallback_mpp: float | None = None, encoder_file: Path | None = None,
                           bar_position: int = 1, budget: ReadBudget | None = None) -> npt.NDArray[np.float32]:
    """``[num_tiles, feature_dim]`` float32 features of the slide's kept tissue tiles, in tile-grid order.

    Raises ``SlideError`` if the slide cannot be read, has no tile with enough tissue, or runs past ``budget``
    (checked before each read). On a terminal a progress bar over the slide's tiles is shown at line
    ``bar_position`` (below the caller's overall bar).
    """
    plan = require_tissue(plan_tiles(path, params, fallback_mpp, budget))
    encoder = get_tile_encoder(encoder_name, device, encoder_file)
    parts: list[npt.NDArray[np.float32]] = []
    with _one_torch_thread(), progress_bar(len(plan.coords), path.name, "tile", position=bar_position,
                                           leave=False) as bar:
        size = DEVICE_BATCH if torch.device(device).type == "cuda" else ENCODE_BATCH
        for batch in prefetched(batched(slide_tiles(plan, budget), size), PREFETCH_BATCHES):
            parts.append(encoder.encode(batch))
            bar.update(len(batch))
    return np.concatenate(parts, axis=0)


def slide_tiles(plan: TilePlan, budget: ReadBudget | None = None) -> Iterator[npt.NDArray[np.uint8]]:
    """The plan's tiles in grid order, colour-normalised as ``plan.params.stain_normalization`` says (read in
    ``budget``).

    For 'reinhard' and 'macenko' the slide's stain statistics come from up to ``STAIN_SAMPLE_TILES`` tiles
    spread over the grid; those are read once and kept for their turn, so no tile is read twice.
    """
    method = plan.params.stain_normalization
    if method == "none":
        yield from iter_tiles(plan, budget=budget)
        return
    count = len(plan.coords)
    picked = sorted({round(i) for i in np.linspace(0, count - 1, min(count, STAIN_SAMPLE_TILES))})
    sampled = dict(zip(picked, iter_tiles(plan, picked, budget), strict=True))
    normalize = _stain_normalizer(method, list(sampled.values()))
    rest = iter_tiles(plan, [i for i in range(count) if i not in sampled], budget)
    for i in range(count):
        tile = sampled.pop(i) if i in sampled else next(rest)
        yield normalize(tile)


def _stain_normalizer(method: str, sample: list[npt.NDArray[np.uint8]]
                      ) -> Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]:
    """The per-tile colour transform of ``method`` fitted to a slide's ``sample`` tiles (identity without tissue)."""
    if method == "reinhard":
        stats = tissue_lab_stats(sample)
        return (lambda tile: tile) if stats is None else (lambda tile: reinhard_normalize(tile, stats))
    if method == "macenko":
        stains = estimate_stains(sample)
        return (lambda tile: tile) if stains is None else (lambda tile: macenko_normalize(tile, stains))
    raise SlideError(f"unknown stain normalisation '{method}'")


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Encode with one intra-op thread, restoring the caller's setting afterwards.

    The encoder is memory-bound: a second thread gained little on an idle 2-core machine and made encoding 3-4x
    slower when other processes shared the cores. Parallelism comes from extracting slides in several processes.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
