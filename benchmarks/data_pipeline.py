"""Site data pipeline throughput: whole pipeline vs raw OpenSlide reads of the same tiles, and the cache speed-up.

12 generated slides (1536 px, 0.5 um/px pyramidal JPEG TIFFs, as ``fedfusion synth`` writes them). Measured side
by side in one run, each in the same pool of 2 spawned worker processes (one slide per task, started and warmed
before timing):

- ``raw-read``: OpenSlide ``read_region`` of exactly the tiles the pipeline keeps (same level, coordinates and
  size; the tile plans are computed beforehand in the parent and not timed), converted to a numpy array;
- ``pipeline``: the site path with a cold cache: content hash for the cache key, tissue mask, tile grid and
  background filter, the study's default stain normalisation (none), the ``random-conv-v1`` encoder, atomic
  cache write;
- ``pipeline-no-encoder``: the same up to the normalised tiles (no encoder, no cache), to separate the data path
  from the encoder's cost;
- ``cached``: the pipeline again on the warm cache (hash + load).

Repetitions alternate in order; medians are reported. Writes ``benchmarks/results/data_pipeline.json`` and a
line in ``benchmarks/results/README.md``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openslide

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dp_overhead import record_summary

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.slide_features import extract_slide_features, slide_tiles
from fedfusion.data.slides.tiling import TilingParams, plan_tiles
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.study.config import StudyConfig

RESULTS = Path(__file__).resolve().parent / "results"
SLIDES = 12
SLIDE_PX = 1536
WORKERS = 2
REPETITIONS = 9
ENCODER = StudyConfig.encoder
PARAMS = TilingParams.from_study(StudyConfig())


def write_slides(folder: Path) -> list[Path]:
    """Render and write the benchmark slides (image scores spread over [0, 1])."""
    profile = draw_site_profiles(1, (SLIDES,), np.random.default_rng(0))[0]
    paths = []
    for i in range(SLIDES):
        path = folder / f"slide-{i:02d}.tiff"
        rgb = render_slide(SLIDE_PX, i / (SLIDES - 1), profile, np.random.default_rng(i))
        write_pyramid_tiff(path, rgb, 0.5, 3)
        paths.append(path)
    return paths


def raw_read(path: Path, coords: list[tuple[int, int]], level: int, size: int) -> int:
    """Read the given tiles with plain OpenSlide ``read_region``; return the tile count."""
    slide = openslide.OpenSlide(path)
    for x, y in coords:
        np.asarray(slide.read_region((x, y), level, (size, size)))
    slide.close()
    return len(coords)


def pipeline(path: Path, cache_dir: str) -> int:
    """The cached extraction path of one slide; return the tile count."""
    cache = FeatureCache(Path(cache_dir))
    key = cache.key(path, ENCODER, PARAMS, None)
    features = cache.load(key)
    if features is None:
        features = extract_slide_features(path, PARAMS, ENCODER)
        cache.store(key, features)
    return len(features)


def pipeline_no_encoder(path: Path) -> int:
    """Tiling, background filter and normalisation of one slide (tiles consumed, not encoded)."""
    return sum(1 for _ in slide_tiles(plan_tiles(path, PARAMS)))


def timed(pool: ProcessPoolExecutor, job: Callable[..., int], *per_slide: list[Any]) -> float:
    """Wall seconds for the pool to run ``job`` on every slide (one argument list per parameter)."""
    start = time.perf_counter()
    list(pool.map(job, *per_slide))
    return time.perf_counter() - start


def main() -> None:
    """Measure, print and record throughputs and ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_slides(Path(tmp))
        plans = [plan_tiles(p, PARAMS) for p in paths]
        tiles = sum(len(plan.coords) for plan in plans)
        raw_args = [paths, [[(int(x), int(y)) for x, y in plan.coords] for plan in plans],
                    [plan.level for plan in plans], [plan.read_size for plan in plans]]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
            timed(pool, pipeline, paths[:WORKERS], [str(Path(tmp) / "warm-up")] * WORKERS)
            samples: dict[str, list[float]] = {"raw-read": [], "pipeline": [], "pipeline-no-encoder": [],
                                               "cached": []}
            for rep in range(REPETITIONS):
                cache_dirs = [str(Path(tmp) / f"cache-{rep}")] * len(paths)
                runs = [("raw-read", lambda: timed(pool, raw_read, *raw_args)),
                        ("pipeline-no-encoder", lambda: timed(pool, pipeline_no_encoder, paths)),
                        ("pipeline", lambda dirs=cache_dirs: timed(pool, pipeline, paths, dirs))]
                for name, run in runs if rep % 2 == 0 else list(reversed(runs)):
                    samples[name].append(run())
                samples["cached"].append(timed(pool, pipeline, paths, cache_dirs))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    throughput = {name: tiles / seconds for name, seconds in medians.items()}
    ratios = {"pipeline_over_raw": throughput["pipeline"] / throughput["raw-read"],
              "no_encoder_over_raw": throughput["pipeline-no-encoder"] / throughput["raw-read"],
              "cached_speedup": medians["pipeline"] / medians["cached"]}
    result = {
        "benchmark": "data_pipeline",
        "setup": {"slides": SLIDES, "slide_px": SLIDE_PX, "tiles": tiles, "workers": WORKERS,
                  "tile_size": PARAMS.tile_size, "target_mpp": PARAMS.target_mpp,
                  "stain_normalization": PARAMS.stain_normalization, "encoder": ENCODER,
                  "repetitions": REPETITIONS},
        "median_seconds": medians, "tiles_per_second": throughput, "samples_seconds": samples, "ratios": ratios,
        "environment": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                        "openslide": openslide.__version__},
    }
    atomic_write_text(RESULTS / "data_pipeline.json", json.dumps(result, indent=2) + "\n")
    line = (f"{tiles} tiles of {SLIDES} slides, {WORKERS} workers: pipeline **{ratios['pipeline_over_raw']:.2f}x** "
            f"raw read_region throughput with the random-conv encoder ({throughput['pipeline']:.0f} vs "
            f"{throughput['raw-read']:.0f} tiles/s), {ratios['no_encoder_over_raw']:.2f}x without encoder; "
            f"cached run **{ratios['cached_speedup']:.0f}x** faster than cold -> "
            "[data_pipeline.json](data_pipeline.json)")
    print(line)
    record_summary("data_pipeline", line)


if __name__ == "__main__":
    main()
