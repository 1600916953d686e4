"""A site's cohort: manifest + clinical + omics + cached slide features, joined per patient and split.

Reads the site layout of docs/SITE_DATA.md (``manifest.csv``, ``clinical.csv``, one table per schema omics layer
(``table_sources``) and the slides) as the study schema declares it. A patient lacking slides or an omics layer
keeps it as None. The split is the schema's split column, or else a per-patient hash rule
(``fedfusion.data.patient_split``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.findings import Findings
from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.data.patient_split import is_test_patient
from fedfusion.data.progress import progress_bar
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME, FeatureCache
from fedfusion.data.slides.slide_features import extract_slide_features
from fedfusion.data.slides.slide_reader import check_slide_file
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.data.tables.manifest import ManifestEntry
from fedfusion.data.tables.site_tables import read_site_tables
from fedfusion.errors import ConfigError, DataError, SlideError
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import SPLITS, StudySchema


@dataclass(frozen=True)
class _SlideJob:
    path: Path
    key: str


def load_site_cohort(site_dir: Path, study: StudyConfig, *, cache_dir: Path | None = None, device: str = "cpu",
                     fallback_mpp: float | None = None, skip_bad: bool = False,
                     progress: Callable[[str], None] | None = None, workers: int = 1,
                     encoder_file: Path | None = None) -> SiteCohort:
    """Read one site's data, as the study's schema declares it, into patient records split into train and test.

    Slide features come from the cache in ``cache_dir`` (default ``<site_dir>/.fedfusion-cache``) or are
    extracted (in ``workers`` spawned processes when > 1, so a calling script needs the usual
    ``if __name__ == "__main__"`` guard). A slide that cannot be used raises ``SlideError``, or with
    ``skip_bad`` is reported in ``SiteCohort.notes`` and its patient kept without it; with ``skip_bad`` a
    manifest patient without clinical labels is left out (a note) too. Other table problems always raise
    ``DataError`` naming the file and patient. ``encoder_file`` is the site's copy of a ``torchscript:`` or
    ``safetensors:`` study encoder (see ``fedfusion.data.slides.tile_encoder``). The split is the schema's split
    column when it has one, else the hash rule (``fedfusion.data.patient_split``).
    """
    site_dir = Path(site_dir)
    report = progress or (lambda _msg: None)
    schema = study.spec
    if not site_dir.is_dir():
        raise DataError(f"site {site_dir.name}: directory {site_dir} does not exist")
    findings = Findings()
    tables = read_site_tables(site_dir, schema, findings, skip_bad=skip_bad)
    findings.raise_errors()
    notes = [str(w) for w in findings.warnings]
    entries = tables.entries
    features: dict[Path, npt.NDArray[np.float32]] = {}
    cache = FeatureCache(cache_dir if cache_dir is not None else site_dir / CACHE_DIRNAME)
    if "wsi" in schema.modalities:
        _check_encoder(study, encoder_file)
        features, slide_notes = _slide_features(entries, TilingParams.from_study(study), study.encoder, cache,
                                                device, fallback_mpp, skip_bad, workers, report, encoder_file)
        notes.extend(slide_notes)

    splits: dict[str, list[PatientRecord]] = {split: [] for split in SPLITS}
    for entry in entries:
        row = tables.clinical[entry.patient_id]
        bags = [features[s] for s in entry.slides if s in features]
        record = PatientRecord(
            patient_id=entry.patient_id,
            tile_features=np.concatenate(bags, axis=0) if bags else None,
            omics=tuple(tables.layers[layer.name].sample_vector(entry.samples[layer.name], entry.patient_id)
                        if layer.name in entry.samples and layer.name in tables.layers else None
                        for layer in schema.omics),
            clinical=row.covariates, labels=row.labels)
        split = row.split or ("test" if is_test_patient(entry.patient_id, study.seed, study.test_fraction)
                              else "train")
        splits[split].append(record)
    cohort = SiteCohort(site=site_dir.name, train=splits["train"], test=splits["test"], notes=notes,
                        validation=splits["validation"])
    notes.append(_summary(cohort, schema, "fixed split column" if schema.split_column else "hash split")
                 + (f"; feature cache {cache.hits} hits, {cache.misses} extracted" if "wsi" in schema.modalities
                    else ""))
    report(f"site {site_dir.name}: {notes[-1]}")
    return cohort


def _summary(cohort: SiteCohort, schema: StudySchema, split_rule: str) -> str:
    """One line: patients per split and how many lack each modality."""
    patients = [*cohort.train, *cohort.test, *cohort.validation]
    parts = [f"{len(patients)} patients ({len(cohort.train)} train, {len(cohort.test)} test"
             + (f", {len(cohort.validation)} validation" if cohort.validation else "") + f"; {split_rule})"]
    if "wsi" in schema.modalities:
        parts.append(f"{sum(1 for r in patients if r.tile_features is None)} without slide features")
    for index, layer in enumerate(schema.omics):
        parts.append(f"{sum(1 for r in patients if r.omics[index] is None)} without {layer.name}")
    return "; ".join(parts)


def _check_encoder(study: StudyConfig, encoder_file: Path | None) -> None:
    feature_dim = get_tile_encoder(study.encoder, encoder_file=encoder_file).feature_dim
    if feature_dim != study.tile_feature_dim:
        raise ConfigError(f"study config 'tile-feature-dim' is {study.tile_feature_dim} but encoder "
                          f"'{study.encoder}' gives {feature_dim} features")


def _slide_features(entries: list[ManifestEntry], params: TilingParams, encoder: str, cache: FeatureCache,
                    device: str, fallback_mpp: float | None, skip_bad: bool, workers: int,
                    report: Callable[[str], None],
                    encoder_file: Path | None) -> tuple[dict[Path, npt.NDArray[np.float32]], list[str]]:
    """Features of every slide (from the cache or extracted), and notes on slides skipped as bad."""
    features: dict[Path, npt.NDArray[np.float32]] = {}
    notes: list[str] = []
    jobs: list[_SlideJob] = []
    owner: dict[Path, str] = {}
    for entry in entries:
        for slide in entry.slides:
            owner.setdefault(slide, entry.patient_id)

    def fail(path: Path, error: SlideError) -> None:
        if not skip_bad:
            raise error
        notes.append(f"skipped slide of patient {owner[path]}: {error}")

    for path in owner:
        try:
            check_slide_file(path)
        except SlideError as error:
            fail(path, error)
            continue
        key = cache.key(path, encoder, params, fallback_mpp)
        cached = cache.load(key)
        if cached is None:
            jobs.append(_SlideJob(path, key))
        else:
            features[path] = cached
    if jobs:
        report(f"extracting tile features of {len(jobs)} slides ({len(features)} cached)")
    with progress_bar(len(jobs), "slides", "slide") as bar:
        for job, result in _extract(jobs, params, encoder, device, fallback_mpp, workers, encoder_file):
            bar.update(1)
            if isinstance(result, SlideError):
                fail(job.path, result)
                continue
            cache.store(job.key, result)
            features[job.path] = result
    return features, notes


def _extract(jobs: list[_SlideJob], params: TilingParams, encoder: str, device: str, fallback_mpp: float | None,
             workers: int, encoder_file: Path | None
             ) -> Iterator[tuple[_SlideJob, npt.NDArray[np.float32] | SlideError]]:
    """Extract the jobs' features in order, serially or in a process pool (one OpenSlide handle per task)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                yield job, extract_slide_features(job.path, params, encoder, device, fallback_mpp, encoder_file)
            except SlideError as error:
                yield job, error
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(extract_slide_features, job.path, params, encoder, device, fallback_mpp, encoder_file,
                               1 + index % workers)
                   for index, job in enumerate(jobs)]
        for job, future in zip(jobs, futures, strict=True):
            try:
                yield job, future.result()
            except SlideError as error:
                yield job, error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
