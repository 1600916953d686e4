"""Radiology data path throughput: volumes per second through ``site prepare``'s path next to reading alone.

24 generated CT scans (``fedfusion synth --radiology``'s renderer: about 44 x 44 x 24 voxels, one DICOM file per
slice, a NIfTI tumour mask each), with the radiogenomic schema's knobs (1.5 mm isotropic, crop around the mask, HU
window, 12 radiomics features). Measured side by side in one process (SimpleITK's own threads), repetitions
alternating in order, medians reported:

- ``read``: SimpleITK's series reader on the slices in file-name order (pixels only, no checks);
- ``read-checked``: ``volume_reader.read_volume``: the series' geometry and modality checks (pydicom, those tags
  only), then the same reader;
- ``pipeline``: ``prepare.compute_volume``: the checked read, the mask and its alignment check, crop, resampling,
  normalisation and the radiomics features;
- ``cached``: the cache key (content hash of every slice and the mask) and the cached features' load.

Writes ``benchmarks/results/radiology.json`` and a line in ``benchmarks/results/README.md``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dp_overhead import record_summary

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.radiology.prepare import compute_volume
from fedfusion.data.radiology.volume_key import volume_key
from fedfusion.data.radiology.volume_reader import read_volume
from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.synthetic.radiology import ScannerProfile, render_ct, write_ct_series, write_nifti_mask
from fedfusion.study.config import RADIOGENOMICS_SCHEMA_FILE
from fedfusion.study.schema import load_schema

RESULTS = Path(__file__).resolve().parent / "results"
VOLUMES = 24
REPETITIONS = 5
SPEC = load_schema(RADIOGENOMICS_SCHEMA_FILE).radiology
SCANNER = ScannerProfile(pixel_mm=1.1, slice_mm=2.0, noise_hu=10.0, offset_hu=0.0)


def write_scans(folder: Path) -> list[tuple[Path, Path]]:
    """The benchmark's CT series and masks."""
    rng = np.random.default_rng(0)
    scans = []
    for i in range(VOLUMES):
        hu, mask = render_ct(float(rng.uniform()), float(rng.normal()), SCANNER, rng)
        write_ct_series(folder / f"p{i}" / "ct", hu, SCANNER, f"P{i}", i)
        write_nifti_mask(folder / f"p{i}" / "mask.nii.gz", mask, SCANNER)
        scans.append((folder / f"p{i}" / "ct", folder / f"p{i}" / "mask.nii.gz"))
    return scans


def plain_read(series: Path) -> None:
    """SimpleITK's series reader alone, files in name order."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in sorted(series.iterdir())])
    reader.Execute()


def timed(job: Callable[[Path, Path], object], scans: list[tuple[Path, Path]]) -> float:
    start = time.perf_counter()
    for series, mask in scans:
        job(series, mask)
    return time.perf_counter() - start


def main() -> None:
    """Measure, print and record throughputs and ratios."""
    assert SPEC is not None
    with tempfile.TemporaryDirectory() as tmp:
        scans = write_scans(Path(tmp))
        cache = FeatureCache(Path(tmp) / "cache")
        for series, mask in scans:
            cache.store(volume_key(series, mask, SPEC), compute_volume(series, mask, SPEC).reshape(1, -1))
        runs: list[tuple[str, Callable[[Path, Path], object]]] = [
            ("read", lambda series, _mask: plain_read(series)),
            ("read-checked", lambda series, _mask: read_volume(series, SPEC.modality)),
            ("pipeline", lambda series, mask: compute_volume(series, mask, SPEC)),
            ("cached", lambda series, mask: cache.load(volume_key(series, mask, SPEC))),
        ]
        samples: dict[str, list[float]] = {name: [] for name, _ in runs}
        for rep in range(REPETITIONS):
            for name, job in runs if rep % 2 == 0 else list(reversed(runs)):
                samples[name].append(timed(job, scans))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    throughput = {name: VOLUMES / seconds for name, seconds in medians.items()}
    ratios = {"pipeline_over_read": throughput["pipeline"] / throughput["read"],
              "checked_over_read": throughput["read-checked"] / throughput["read"],
              "cached_speedup": medians["pipeline"] / medians["cached"]}
    result = {
        "benchmark": "radiology",
        "setup": {"volumes": VOLUMES, "voxels": [44, 44, 24], "slice_files": 24, "spacing_mm": list(SPEC.spacing),
                  "crop": SPEC.crop, "features": len(SPEC.features), "repetitions": REPETITIONS},
        "median_seconds": medians, "volumes_per_second": throughput, "samples_seconds": samples, "ratios": ratios,
        "environment": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                        "simpleitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()},
    }
    atomic_write_text(RESULTS / "radiology.json", json.dumps(result, indent=2) + "\n")
    line = (f"{VOLUMES} CT series (44 x 44 x 24 voxels, a DICOM file per slice): radiology path "
            f"**{throughput['pipeline']:.1f} volumes/s** (checks, mask, crop, resampling, 12 radiomics features) vs "
            f"{throughput['read']:.1f} volumes/s reading alone ({ratios['pipeline_over_read']:.2f}x; checked read "
            f"{throughput['read-checked']:.1f}/s); cached **{ratios['cached_speedup']:.0f}x** faster -> "
            "[radiology.json](radiology.json)")
    print(line)
    record_summary("radiology", line)


if __name__ == "__main__":
    main()
