"""Generate a synthetic multi-hospital cohort as the real files a hospital would hold.

Layout (also the layout ``fedfusion.data.cohort.load_site_cohort`` reads at a real site)::

    <out_dir>/cohort.json            sites in order (name, dir relative to out_dir, num_patients), generator
                                     params and seed, oracle file
    <out_dir>/study.toml             the study schema (a copy of ``fedfusion/study/synthetic_schema.toml``):
                                     covariates, tasks, the omics layers' gene panels; with the
                                     feature-scaling file it names (``synthetic_feature_scaling.json``)
    <out_dir>/oracle.csv             site, patient_id, oracle_risk (+ its parts image_score, omics_score,
                                     cnv_score, age_z): ground truth for the simulator only, never in a site dir
    <out_dir>/<site>/manifest.csv    patient_id, slides (';'-separated paths relative to the site dir, may be
                                     empty), omics_sample (column of the expression table, may be empty),
                                     cnv_sample (column of the copy-number table, may be empty)
    <out_dir>/<site>/clinical.csv    patient_id, age, sex (F/M), survival_months, event (0/1), subtype (name)
    <out_dir>/<site>/expression_tpm.csv   RNA-seq TPM, genes x samples: gene_id, then one column per sample
    <out_dir>/<site>/copy_number.csv      log2 copy-number ratios, genes x samples, like the expression table
    <out_dir>/<site>/slides/<patient_id>.tiff   pyramidal tiled JPEG TIFF, 0.5 um/px at level 0 (resolution tags)

With ``radiology=True`` (``fedfusion synth --radiology``) the cohort is radiogenomic: each patient gets a CT scan
instead of a slide (``fedfusion.data.synthetic.radiology``: a planted tumour whose size follows the slides' risk
part and whose texture follows the omics risk module, each site with its own scanner), the manifest names them in
``radiology`` and ``radiology_mask``, and ``study.toml`` is ``fedfusion/study/radiogenomics_schema.toml``
(radiology + omics + clinical)::

    <out_dir>/<site>/radiology/<patient_id>/ct/slice-NNNN.dcm       one DICOM CT file per slice (pydicom)
    <out_dir>/<site>/radiology/<patient_id>/tumour-mask.nii.gz      the tumour's NIfTI label map (nibabel)

The planted signal is described in ``fedfusion.data.synthetic.patients``; how sites differ in
``fedfusion.data.synthetic.sites``. Everything is deterministic given the seed (each slide has its own random
stream, so the process pool does not change the result). Every file is written atomically and ``cohort.json``
last: a directory with ``cohort.json`` is complete, and generating again with the same parameters reuses it.
The generator writes only into a new or empty folder, or one it was interrupted in (it writes the marker
``.fedfusion-generating`` first and removes it last): any other folder is refused, never overwritten.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedfusion.atomic_io import atomic_write, atomic_write_bytes, atomic_write_text
from fedfusion.data.cohort_index import COHORT_INDEX_FILE, GENERATING_MARKER, ORACLE_FILE, SCHEMA_FILE
from fedfusion.data.synthetic.copy_number import simulate_copy_number
from fedfusion.data.synthetic.expression import simulate_expression
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.patients import SUBTYPES, PatientTruth, simulate_patients
from fedfusion.data.synthetic.pyramid_tiff import write_pyramid_tiff
from fedfusion.data.synthetic.radiology import (
    SCAN_MISSING_RATE,
    ScannerProfile,
    draw_scanner,
    render_ct,
    write_ct_series,
    write_nifti_mask,
)
from fedfusion.data.synthetic.sites import SiteProfile, draw_site_profiles
from fedfusion.errors import ConfigError
from fedfusion.study.config import RADIOGENOMICS_SCHEMA_FILE, SYNTHETIC_SCHEMA_FILE
from fedfusion.study.schema import feature_scaling_file

GENERATOR_VERSION = "fedfusion-synthetic/3"
SLIDE_MPP = 0.5
SLIDE_LEVELS = 3
DEFAULT_SLIDE_SIZE_PX = 1280


def generate_cohort(out_dir: Path, num_sites: int = 3, seed: int = 0,
                    patients_per_site: Sequence[int] | None = None, slide_size_px: int = DEFAULT_SLIDE_SIZE_PX,
                    progress: Callable[[str], None] | None = None, workers: int | None = None,
                    radiology: bool = False) -> Path:
    """Write a synthetic cohort under ``out_dir`` (layout in the module docstring) and return ``out_dir``.

    If ``out_dir/cohort.json`` already records the same parameters nothing is regenerated; if it records other
    parameters, or ``out_dir`` holds anything but an interrupted generation, a ``ConfigError`` is raised rather
    than overwriting someone's files. ``workers`` processes render slides (default: all CPUs).
    """
    if num_sites <= 0:
        raise ConfigError(f"synthetic cohort: num_sites must be > 0, got {num_sites}")
    if patients_per_site is not None and (len(patients_per_site) != num_sites or min(patients_per_site) <= 0):
        raise ConfigError(f"synthetic cohort: patients_per_site must give {num_sites} positive counts, "
                          f"got {list(patients_per_site)}")
    if slide_size_px < 256:
        raise ConfigError(f"synthetic cohort: slide_size_px must be >= 256, got {slide_size_px}")
    out_dir = Path(out_dir)
    params = {"generator": GENERATOR_VERSION, "num_sites": num_sites, "seed": seed,
              "patients_per_site": None if patients_per_site is None else [int(n) for n in patients_per_site],
              "slide_size_px": slide_size_px, **({"radiology": True} if radiology else {})}
    report = progress or (lambda _msg: None)
    index_path = out_dir / COHORT_INDEX_FILE
    if index_path.is_file():
        existing = json.loads(index_path.read_text(encoding="utf-8")).get("params")
        if existing == params:
            report(f"reusing synthetic cohort in {out_dir}")
            return out_dir
        raise ConfigError(f"synthetic cohort {out_dir}: already holds a cohort generated with {existing}, "
                          f"not {params}; choose another directory or delete it")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / GENERATING_MARKER).is_file():
        raise ConfigError(f"synthetic cohort {out_dir}: the folder is not empty and holds no synthetic cohort; "
                          "choose a new or empty folder (nothing was written)")
    atomic_write_text(out_dir / GENERATING_MARKER, "a synthetic cohort is being generated here\n")

    root_seed = np.random.SeedSequence([seed, 0xC0401])
    profile_seed, *site_seeds = root_seed.spawn(num_sites + 1)
    profiles = draw_site_profiles(num_sites, None if patients_per_site is None else tuple(patients_per_site),
                                  np.random.default_rng(profile_seed))
    schema_file = RADIOGENOMICS_SCHEMA_FILE if radiology else SYNTHETIC_SCHEMA_FILE
    atomic_write_text(out_dir / SCHEMA_FILE, schema_file.read_text(encoding="utf-8"))
    scaling_file = feature_scaling_file(schema_file)
    if scaling_file is not None:
        atomic_write_bytes(out_dir / scaling_file.name, scaling_file.read_bytes())
    oracle_parts = []
    # Workers only run numpy/PIL/tifffile code, so fork is safe where it exists, starts fast and, unlike spawn,
    # does not re-import the caller's main module (a script without a __main__ guard still works).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=context) as pool:
        for profile, site_seed in zip(profiles, site_seeds, strict=True):
            patients_seed, omics_seed, slides_seed, cnv_seed, scans_seed = site_seed.spawn(5)
            truth = simulate_patients(profile, np.random.default_rng(patients_seed))
            scans = _scan_plan(truth, scans_seed) if radiology else None
            oracle_parts.append(_write_site_tables(out_dir / profile.name, profile, truth,
                                                   np.random.default_rng(omics_seed), np.random.default_rng(cnv_seed),
                                                   scans))
            if scans is not None:
                jobs = [pool.submit(_render_and_write_scan, out_dir / profile.name, pid, float(truth.image_score[i]),
                                    float(truth.omics_score[i]), scans.scanner, stream)
                        for i, (pid, stream) in enumerate(zip(truth.patient_ids, scans.streams, strict=True))
                        if scans.has_scan[i]]
                for job in jobs:
                    job.result()
                report(f"{profile.name}: {profile.num_patients} patients, {len(jobs)} CT scans")
                continue
            streams = slides_seed.spawn(len(truth.patient_ids))
            jobs = [pool.submit(_render_and_write, out_dir / profile.name / "slides" / f"{pid}.tiff",
                                slide_size_px, float(truth.image_score[i]), profile, stream)
                    for i, (pid, stream) in enumerate(zip(truth.patient_ids, streams, strict=True))
                    if truth.has_slide[i]]
            for job in jobs:
                job.result()
            report(f"{profile.name}: {profile.num_patients} patients, {len(jobs)} slides")
    oracle = pd.concat(oracle_parts, ignore_index=True)
    atomic_write(out_dir / ORACLE_FILE, lambda tmp: oracle.to_csv(tmp, index=False, float_format="%.6g"))
    index = {
        "format": "fedfusion-cohort/1",
        "sites": [{"name": p.name, "dir": p.name, "num_patients": p.num_patients} for p in profiles],
        "oracle": ORACLE_FILE,
        "seed": seed,
        "params": params,
    }
    atomic_write_text(index_path, json.dumps(index, indent=2) + "\n")
    (out_dir / GENERATING_MARKER).unlink()
    return out_dir


@dataclass(frozen=True)
class _ScanPlan:
    """A radiogenomic site's scanner, which patients have a scan, and one random stream per patient."""

    scanner: ScannerProfile
    has_scan: npt.NDArray[np.bool_]
    streams: list[np.random.SeedSequence]


def _scan_plan(truth: PatientTruth, seed: np.random.SeedSequence) -> _ScanPlan:
    rng = np.random.default_rng(seed)
    scanner = draw_scanner(rng)
    has_scan = rng.random(len(truth.patient_ids)) >= SCAN_MISSING_RATE
    return _ScanPlan(scanner, has_scan, seed.spawn(len(truth.patient_ids)))


def _write_site_tables(site_dir: Path, profile: SiteProfile, truth: PatientTruth, rng: np.random.Generator,
                       cnv_rng: np.random.Generator, scans: _ScanPlan | None = None) -> pd.DataFrame:
    """Write manifest, clinical, expression and copy-number tables of one site; return its oracle rows."""
    ids = truth.patient_ids
    sample_of = {int(i): f"{profile.name.upper()}-RNA-{k + 1:04d}"
                 for k, i in enumerate(np.flatnonzero(truth.has_omics))}
    cnv_of = {int(i): f"{profile.name.upper()}-CNV-{k + 1:04d}" for k, i in enumerate(np.flatnonzero(truth.has_cnv))}
    manifest = pd.DataFrame({
        "patient_id": ids,
        "slides": [f"slides/{pid}.tiff" if truth.has_slide[i] and scans is None else "" for i, pid in enumerate(ids)],
        "omics_sample": [sample_of.get(i, "") for i in range(len(ids))],
        "cnv_sample": [cnv_of.get(i, "") for i in range(len(ids))],
    })
    if scans is not None:
        manifest["radiology"] = [f"radiology/{pid}/ct" if scans.has_scan[i] else "" for i, pid in enumerate(ids)]
        manifest["radiology_mask"] = [f"radiology/{pid}/tumour-mask.nii.gz" if scans.has_scan[i] else ""
                                      for i, pid in enumerate(ids)]
    clinical = pd.DataFrame({
        "patient_id": ids,
        "age": truth.age.astype(int),
        "sex": np.where(truth.male, "M", "F"),
        "survival_months": truth.time_months,
        "event": truth.event,
        "subtype": [SUBTYPES[k] for k in truth.subtype],
    })
    expression = simulate_expression(profile, truth, list(sample_of.values()), rng)
    copy_number = simulate_copy_number(profile, truth, list(cnv_of.values()), cnv_rng)
    atomic_write(site_dir / "manifest.csv", lambda tmp: manifest.to_csv(tmp, index=False))
    atomic_write(site_dir / "clinical.csv", lambda tmp: clinical.to_csv(tmp, index=False))
    atomic_write(site_dir / "expression_tpm.csv", lambda tmp: expression.to_csv(tmp))
    atomic_write(site_dir / "copy_number.csv", lambda tmp: copy_number.to_csv(tmp))
    return pd.DataFrame({"site": profile.name, "patient_id": ids, "oracle_risk": truth.log_risk,
                         "image_score": truth.image_score, "omics_score": truth.omics_score,
                         "cnv_score": truth.cnv_score, "age_z": truth.age_z})


def _render_and_write(path: Path, size: int, image_score: float, profile: SiteProfile,
                      stream: np.random.SeedSequence) -> None:
    """Render one patient's slide and write it as a pyramidal TIFF (runs in a worker process)."""
    rgb = render_slide(size, image_score, profile, np.random.default_rng(stream))
    write_pyramid_tiff(path, rgb, SLIDE_MPP, SLIDE_LEVELS)


def _render_and_write_scan(site_dir: Path, patient_id: str, image_score: float, omics_score: float,
                           scanner: ScannerProfile, stream: np.random.SeedSequence) -> None:
    """Render one patient's CT and write its DICOM series and NIfTI mask (runs in a worker process)."""
    rng = np.random.default_rng(stream)
    hu, mask = render_ct(image_score, omics_score, scanner, rng)
    folder = site_dir / "radiology" / patient_id
    write_ct_series(folder / "ct", hu, scanner, patient_id, int(rng.integers(2**31)))
    write_nifti_mask(folder / "tumour-mask.nii.gz", mask, scanner)
