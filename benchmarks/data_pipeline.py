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
- ``cached``: the pipeline again on the warm cache (hash + load);
- ``pipeline-resnet18``: the same pipeline with the ``resnet18`` encoder (``safetensors:resnet18:<sha>``, random
  weights from a fixed seed written to a temporary file: nothing downloaded);
- ``encoder-alone-resnet18``: that encoder alone on the same (normalised) tiles, loaded into memory from a
  ``.npy`` file per slide (written beforehand, in the page cache), in the same batches and with the same one torch
  thread per process as the pipeline.

Repetitions alternate in order; medians are reported, with the load average (``os.getloadavg``) before and after
the run, since the machine may be shared. Writes ``benchmarks/results/data_pipeline.json`` and a
line in ``benchmarks/results/README.md``.

When torch sees a CUDA device, the GPU figures follow (``--gpu-only``: only them, into ``data_pipeline_gpu.json``
and their own README line), on the same slides each extracted ``GPU_REPEAT`` times:

- ``gpu-pipeline-resnet18``: what ``site prepare`` does on a GPU (``device_extraction``): reader processes (as
  many as ``site prepare --workers`` defaults to, the CPU count) read the tiles, the benchmark's process encodes
  them with ``resnet18`` on the GPU and writes each slide into a cache; starting the readers is included;
- ``gpu-encoder-alone-resnet18``: the encoder alone on the GPU on the same tiles in memory, in the same batches,
  one batch in flight as in the pipeline;
- ``gpu-reader-start``: the pipeline on one slide (mostly starting the reader processes), to see the fixed cost.
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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openslide
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dp_overhead import record_summary

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.slides.device_extraction import encode_slides
from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.slide_features import DEVICE_BATCH, ENCODE_BATCH, extract_slide_features, slide_tiles
from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.data.slides.tile_encoder import (
    SAFETENSORS_PREFIX,
    EncodingBatch,
    ResNet18Encoder,
    get_tile_encoder,
)
from fedfusion.data.slides.tiling import TilePlan, TilingParams, batched, plan_tiles
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.errors import SlideError
from fedfusion.study.config import StudyConfig

RESULTS = Path(__file__).resolve().parent / "results"
SLIDES = 12
SLIDE_PX = 1536
WORKERS = 2
REPETITIONS = 5
ENCODER = StudyConfig.encoder
RESNET_SEED = 0
GPU_REPEAT = 100
"""Times each slide is extracted in the GPU runs: enough tiles to keep a GPU busy for seconds."""
GPU_REPETITIONS = 3
GPU_READERS = os.cpu_count() or 1
"""Reader processes of the GPU pipeline: ``site prepare --workers``' default."""
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


def write_resnet18(folder: Path) -> tuple[str, Path]:
    """A ``resnet18`` safetensors file with seeded random weights; return its study encoder name and path."""
    torch.manual_seed(RESNET_SEED)
    path = folder / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ResNet18Encoder().state_dict().items()}, str(path))
    return f"{SAFETENSORS_PREFIX}{ResNet18Encoder.name}:{file_sha256(path)}", path


def write_tiles(plan: TilePlan, path: Path) -> str:
    """The plan's normalised tiles as one ``.npy`` array (what the encoder-alone run encodes); return its path."""
    np.save(path, np.stack(list(slide_tiles(plan))))
    return str(path)


def pipeline(path: Path, cache_dir: str, encoder: str = ENCODER, encoder_file: Path | None = None) -> int:
    """The cached extraction path of one slide; return the tile count."""
    cache = FeatureCache(Path(cache_dir))
    key = cache.key(path, encoder, PARAMS, None)
    features = cache.load(key)
    if features is None:
        features = extract_slide_features(path, PARAMS, encoder, encoder_file=encoder_file)
        cache.store(key, features)
    return len(features)


def encoder_alone(tiles_file: str, encoder: str, encoder_file: Path) -> int:
    """Encode one slide's tiles from memory, in the pipeline's batches on one torch thread; return the tile count."""
    tiles = np.load(tiles_file)
    model = get_tile_encoder(encoder, "cpu", encoder_file)
    torch.set_num_threads(1)
    for batch in batched(tiles, ENCODE_BATCH):
        model.encode(batch)
    return len(tiles)


def pipeline_no_encoder(path: Path) -> int:
    """Tiling, background filter and normalisation of one slide (tiles consumed, not encoded)."""
    return sum(1 for _ in slide_tiles(plan_tiles(path, PARAMS)))


def timed(pool: ProcessPoolExecutor, job: Callable[..., int], *per_slide: list[Any]) -> float:
    """Wall seconds for the pool to run ``job`` on every slide (one argument list per parameter)."""
    start = time.perf_counter()
    list(pool.map(job, *per_slide))
    return time.perf_counter() - start


def gpu_pipeline(paths: list[Path], encoder: str, encoder_file: Path, cache_dir: Path) -> float:
    """Wall seconds of the GPU extraction path on ``paths`` (readers started, slides encoded and cached)."""
    cache = FeatureCache(cache_dir)

    def store(index: int, result: npt.NDArray[np.float32] | SlideError) -> bool:
        if isinstance(result, SlideError):
            raise result
        cache.store(cache.key(paths[index], encoder, PARAMS, None), result)
        return True

    start = time.perf_counter()
    encode_slides(paths, PARAMS, encoder, "cuda", readers=GPU_READERS, done=store, encoder_file=encoder_file)
    return time.perf_counter() - start


def gpu_encoder_alone(slide_tiles_in_memory: list[npt.NDArray[np.uint8]], encoder: str, encoder_file: Path) -> float:
    """Wall seconds to encode the tiles ``GPU_REPEAT`` times on the GPU, one batch in flight, as the pipeline does."""
    model = get_tile_encoder(encoder, "cuda", encoder_file)
    start = time.perf_counter()
    in_flight: EncodingBatch | None = None
    for _ in range(GPU_REPEAT):
        for tiles in slide_tiles_in_memory:
            for batch in batched(tiles, DEVICE_BATCH):
                started = model.start_encoding(batch)
                if in_flight is not None:
                    in_flight.result()
                in_flight = started
    if in_flight is not None:
        in_flight.result()
    return time.perf_counter() - start


def gpu_figures(folder: Path, paths: list[Path], tile_files: list[str], tiles: int, encoder: str,
                encoder_file: Path) -> dict[str, Any]:
    """The GPU pipeline vs the encoder alone on the GPU (medians of ``GPU_REPETITIONS``), and the readers' start."""
    repeated = paths * GPU_REPEAT
    in_memory = [np.load(f) for f in tile_files]
    gpu_pipeline(paths[:1], encoder, encoder_file, folder / "gpu-warm-up")  # CUDA context, cuDNN algorithms
    gpu_encoder_alone(in_memory[:1], encoder, encoder_file)
    samples: dict[str, list[float]] = {"gpu-pipeline-resnet18": [], "gpu-encoder-alone-resnet18": [],
                                       "gpu-reader-start": []}
    for rep in range(GPU_REPETITIONS):
        runs: list[tuple[str, Callable[[], float]]] = [
            ("gpu-pipeline-resnet18", partial(gpu_pipeline, repeated, encoder, encoder_file, folder / f"gpu-{rep}")),
            ("gpu-encoder-alone-resnet18", partial(gpu_encoder_alone, in_memory, encoder, encoder_file))]
        for name, run in runs if rep % 2 == 0 else list(reversed(runs)):
            samples[name].append(run())
        samples["gpu-reader-start"].append(gpu_pipeline(paths[:1], encoder, encoder_file, folder / f"gpu-one-{rep}"))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    throughput = {name: tiles * GPU_REPEAT / medians[name]
                  for name in ("gpu-pipeline-resnet18", "gpu-encoder-alone-resnet18")}
    return {"device": torch.cuda.get_device_name(0), "readers": GPU_READERS, "repeat": GPU_REPEAT,
            "tiles": tiles * GPU_REPEAT, "device_batch": DEVICE_BATCH, "median_seconds": medians,
            "tiles_per_second": throughput, "samples_seconds": samples,
            "pipeline_over_encoder_alone": (throughput["gpu-pipeline-resnet18"]
                                            / throughput["gpu-encoder-alone-resnet18"])}


def gpu_line(gpu: dict[str, Any]) -> str:
    """The README line of the GPU figures."""
    rates = gpu["tiles_per_second"]
    return (f"GPU ({gpu['device']}), resnet18, {gpu['tiles']} tiles, {gpu['readers']} reader processes: pipeline "
            f"**{gpu['pipeline_over_encoder_alone']:.2f}x** the encoder alone on the same tiles in memory "
            f"({rates['gpu-pipeline-resnet18']:.0f} vs {rates['gpu-encoder-alone-resnet18']:.0f} tiles/s; starting "
            f"the readers and one slide {gpu['median_seconds']['gpu-reader-start']:.1f} s)")


def write_inputs(folder: Path) -> tuple[list[Path], list[TilePlan], int, list[Path], str, Path]:
    """The benchmark's slides, their tile plans, tile count and in-memory tile files, and the resnet18 encoder."""
    paths = write_slides(folder)
    resnet, resnet_file = write_resnet18(folder)
    plans = [plan_tiles(p, PARAMS) for p in paths]
    tile_files = [write_tiles(plan, folder / f"tiles-{i:02d}.npy") for i, plan in enumerate(plans)]
    return paths, plans, sum(len(plan.coords) for plan in plans), tile_files, resnet, resnet_file


def main_gpu_only() -> None:
    """Only the GPU figures (for a short session on a GPU machine): ``data_pipeline_gpu.json``, a README line."""
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device (torch.cuda.is_available() is False): no GPU figures to measure")
    with tempfile.TemporaryDirectory() as tmp:
        paths, _, tiles, tile_files, resnet, resnet_file = write_inputs(Path(tmp))
        gpu = gpu_figures(Path(tmp), paths, tile_files, tiles, resnet, resnet_file)
    gpu["environment"] = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
                          **{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    atomic_write_text(RESULTS / "data_pipeline_gpu.json", json.dumps(gpu, indent=2) + "\n")
    line = gpu_line(gpu) + " -> [data_pipeline_gpu.json](data_pipeline_gpu.json)"
    print(line)
    record_summary("data_pipeline_gpu", line)


def main() -> None:
    """Measure, print and record throughputs and ratios (and the GPU figures when there is a GPU)."""
    load_before = os.getloadavg()
    gpu: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        paths, plans, tiles, tile_files, resnet, resnet_file = write_inputs(Path(tmp))
        raw_args = [paths, [[(int(x), int(y)) for x, y in plan.coords] for plan in plans],
                    [plan.level for plan in plans], [plan.read_size for plan in plans]]
        resnets, resnet_files = [resnet] * len(paths), [resnet_file] * len(paths)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
            timed(pool, pipeline, paths[:WORKERS], [str(Path(tmp) / "warm-up")] * WORKERS)
            timed(pool, encoder_alone, tile_files[:WORKERS], resnets[:WORKERS], resnet_files[:WORKERS])
            samples: dict[str, list[float]] = {"raw-read": [], "pipeline": [], "pipeline-no-encoder": [],
                                               "cached": [], "pipeline-resnet18": [], "encoder-alone-resnet18": []}
            for rep in range(REPETITIONS):
                cache_dirs = [str(Path(tmp) / f"cache-{rep}")] * len(paths)
                resnet_dirs = [str(Path(tmp) / f"cache-resnet18-{rep}")] * len(paths)
                runs = [("raw-read", lambda: timed(pool, raw_read, *raw_args)),
                        ("pipeline-no-encoder", lambda: timed(pool, pipeline_no_encoder, paths)),
                        ("pipeline", lambda dirs=cache_dirs: timed(pool, pipeline, paths, dirs)),
                        ("encoder-alone-resnet18",
                         lambda: timed(pool, encoder_alone, tile_files, resnets, resnet_files)),
                        ("pipeline-resnet18",
                         lambda dirs=resnet_dirs: timed(pool, pipeline, paths, dirs, resnets, resnet_files))]
                for name, run in runs if rep % 2 == 0 else list(reversed(runs)):
                    samples[name].append(run())
                samples["cached"].append(timed(pool, pipeline, paths, cache_dirs))
        if torch.cuda.is_available():
            gpu = gpu_figures(Path(tmp), paths, tile_files, tiles, resnet, resnet_file)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    throughput = {name: tiles / seconds for name, seconds in medians.items()}
    ratios = {"pipeline_over_raw": throughput["pipeline"] / throughput["raw-read"],
              "no_encoder_over_raw": throughput["pipeline-no-encoder"] / throughput["raw-read"],
              "cached_speedup": medians["pipeline"] / medians["cached"],
              "resnet18_pipeline_over_encoder_alone": (throughput["pipeline-resnet18"]
                                                       / throughput["encoder-alone-resnet18"])}
    load_after = os.getloadavg()
    result = {
        "benchmark": "data_pipeline",
        "setup": {"slides": SLIDES, "slide_px": SLIDE_PX, "tiles": tiles, "workers": WORKERS,
                  "tile_size": PARAMS.tile_size, "target_mpp": PARAMS.target_mpp,
                  "stain_normalization": PARAMS.stain_normalization, "encoder": ENCODER,
                  "repetitions": REPETITIONS, "resnet18_seed": RESNET_SEED, "encode_batch": ENCODE_BATCH},
        "median_seconds": medians, "tiles_per_second": throughput, "samples_seconds": samples, "ratios": ratios,
        "environment": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                        "openslide": openslide.__version__, "torch": torch.__version__,
                        "load_average_before": load_before, "load_average_after": load_after,
                        **{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}},
        "gpu": gpu,
    }
    atomic_write_text(RESULTS / "data_pipeline.json", json.dumps(result, indent=2) + "\n")
    line = (f"{tiles} tiles of {SLIDES} slides, {WORKERS} workers: pipeline **{ratios['pipeline_over_raw']:.2f}x** "
            f"raw read_region throughput with the random-conv encoder ({throughput['pipeline']:.0f} vs "
            f"{throughput['raw-read']:.0f} tiles/s), {ratios['no_encoder_over_raw']:.2f}x without encoder; "
            f"cached run **{ratios['cached_speedup']:.0f}x** faster than cold; "
            f"resnet18 encoder: pipeline **{ratios['resnet18_pipeline_over_encoder_alone']:.2f}x** the encoder "
            f"alone on the same tiles in memory ({throughput['pipeline-resnet18']:.1f} vs "
            f"{throughput['encoder-alone-resnet18']:.1f} tiles/s; raw read {throughput['raw-read']:.0f} tiles/s); "
            f"CPU, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
            + ("" if gpu is None else f"; {gpu_line(gpu)}") + " -> [data_pipeline.json](data_pipeline.json)")
    print(line)
    record_summary("data_pipeline", line)


if __name__ == "__main__":
    main_gpu_only() if "--gpu-only" in sys.argv[1:] else main()
