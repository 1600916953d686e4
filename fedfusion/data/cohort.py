"""A site's cohort: manifest + clinical + omics + cached slide features, joined per patient and split.

Reads the site layout of docs/SITE_DATA.md (``manifest.csv``, ``clinical.csv``, one table per schema omics layer
(``table_sources``) and the slides) as the study schema declares it. A patient lacking slides or an omics layer
keeps it as None. Tile features and omics vectors get the schema's study-fixed scaling (``feature-scaling``), if any;
the tile features' only when the encoder loaded here is the one its constants were computed with.
The split is the schema's split column, or else a per-patient hash rule
(``fedfusion.data.patient_split``): the study's seed and test fraction, or the site's own (``split``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.findings import Findings
from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.data.patient_split import PatientSplit
from fedfusion.data.radiology.prepared_volumes import read_prepared_volumes
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME, FeatureCache
from fedfusion.data.slides.prepared_features import read_prepared_features
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.data.tables.site_tables import read_site_tables
from fedfusion.errors import ConfigError, DataError
from fedfusion.study.config import StudyConfig
from fedfusion.study.feature_scaling import ColumnScaling
from fedfusion.study.schema import SPLITS, StudySchema


def load_site_cohort(site_dir: Path, study: StudyConfig, *, cache_dir: Path | None = None,
                     fallback_mpp: float | None = None, skip_bad: bool = False,
                     progress: Callable[[str], None] | None = None,
                     encoder_file: Path | None = None, split: PatientSplit | None = None) -> SiteCohort:
    """Read one site's data, as the study's schema declares it, into patient records split into train and test.

    Slide features are only read, from the cache in ``cache_dir`` (default ``<site_dir>/.fedfusion-cache``) that
    ``fedfusion.data.slides.prepare.prepare_slide_features`` (``fedfusion site prepare``) filled beforehand; a
    slide without features raises ``FeaturesNotPreparedError`` naming that command. A slide that cannot be used
    (found so when it was prepared) raises ``SlideError``, or with
    ``skip_bad`` is reported in ``SiteCohort.notes`` and its patient kept without it; with ``skip_bad`` a
    manifest patient without clinical labels is left out (a note) too. Other table problems always raise
    ``DataError`` naming the file and patient. ``encoder_file`` is the site's copy of a ``torchscript:`` or
    ``safetensors:`` study encoder (see ``fedfusion.data.slides.tile_encoder``). The split is the schema's split
    column when it has one (and ``split`` allows it), else the hash rule (``fedfusion.data.patient_split``) with
    ``split``'s seed and test fraction (default: the study's; a deployed site passes its policy's).
    """
    rule = split if split is not None else PatientSplit.of_study(study)
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
    if "wsi" in schema.modalities:
        _check_encoder(study, encoder_file)
        cache = FeatureCache(cache_dir if cache_dir is not None else site_dir / CACHE_DIRNAME, read_only=True)
        features, slide_notes = read_prepared_features(site_dir, entries, study, cache, cache_dir=cache_dir,
                                                       fallback_mpp=fallback_mpp, skip_bad=skip_bad,
                                                       encoder_file=encoder_file)
        notes.extend(slide_notes)
    radiology: dict[str, npt.NDArray[np.float32]] = {}
    if "radiology" in schema.modalities and schema.radiology is not None:
        volume_cache = FeatureCache(cache_dir if cache_dir is not None else site_dir / CACHE_DIRNAME, read_only=True)
        radiology, volume_notes = read_prepared_volumes(site_dir, entries, schema.radiology, volume_cache,
                                                        skip_bad=skip_bad)
        notes.extend(volume_notes)

    splits: dict[str, list[PatientRecord]] = {split: [] for split in SPLITS}
    for entry in entries:
        row = tables.clinical[entry.patient_id]
        bags = [features[s] for s in entry.slides if s in features]
        record = PatientRecord(
            patient_id=entry.patient_id,
            tile_features=_scaled(np.concatenate(bags, axis=0), schema.wsi_scaling) if bags else None,
            omics=tuple(_scaled(tables.layers[layer.name].sample_vector(entry.samples[layer.name], entry.patient_id),
                                layer.scaling)
                        if layer.name in entry.samples and layer.name in tables.layers else None
                        for layer in schema.omics),
            clinical=row.covariates, labels=row.labels, radiology=radiology.get(entry.patient_id))
        fixed = row.split if rule.use_split_column else None
        splits[fixed or ("test" if rule.is_test(entry.patient_id) else "train")].append(record)
    cohort = SiteCohort(site=site_dir.name, train=splits["train"], test=splits["test"], notes=notes,
                        validation=splits["validation"])
    fixed_column = schema.split_column and rule.use_split_column
    notes.append(_summary(cohort, schema, "fixed split column" if fixed_column else "hash split")
                 + (f"; features of {len(features)} slides read from the feature cache"
                    if "wsi" in schema.modalities else ""))
    report(f"site {site_dir.name}: {notes[-1]}")
    return cohort


def _scaled(values: npt.NDArray[np.float32], scaling: ColumnScaling | None) -> npt.NDArray[np.float32]:
    """The schema's study-fixed scaling of one modality's input (``fedfusion.study.feature_scaling``), if any."""
    return values if scaling is None else scaling.apply(values)


def _summary(cohort: SiteCohort, schema: StudySchema, split_rule: str) -> str:
    """One line: patients per split and how many lack each modality."""
    patients = [*cohort.train, *cohort.test, *cohort.validation]
    parts = [f"{len(patients)} patients ({len(cohort.train)} train, {len(cohort.test)} test"
             + (f", {len(cohort.validation)} validation" if cohort.validation else "") + f"; {split_rule})"]
    if "wsi" in schema.modalities:
        parts.append(f"{sum(1 for r in patients if r.tile_features is None)} without slide features")
    if "radiology" in schema.modalities:
        parts.append(f"{sum(1 for r in patients if r.radiology is None)} without radiology")
    for index, layer in enumerate(schema.omics):
        parts.append(f"{sum(1 for r in patients if r.omics[index] is None)} without {layer.name}")
    return "; ".join(parts)


def _check_encoder(study: StudyConfig, encoder_file: Path | None) -> None:
    """The study's encoder, as this site loads it, gives the study's feature count and is the one the schema's
    tile-feature scaling was computed with (``TileScaling.check_encoder``: never another encoder's constants)."""
    encoder = get_tile_encoder(study.encoder, encoder_file=encoder_file)
    if study.spec.wsi_scaling is not None:
        study.spec.wsi_scaling.check_encoder(encoder.identity())
    if encoder.feature_dim != study.tile_feature_dim:
        raise ConfigError(f"study config 'tile-feature-dim' is {study.tile_feature_dim} but encoder "
                          f"'{study.encoder}' gives {encoder.feature_dim} features")
