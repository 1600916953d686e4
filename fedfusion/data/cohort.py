"""A site's cohort: manifest + clinical + omics + cached slide features, joined per patient and split.

Reads the site layout documented in ``fedfusion.data.synthetic.generator`` (``manifest.csv``, ``clinical.csv``,
the expression and copy-number tables (``table_sources``) and the slides). A patient lacking slides or an omics
layer keeps it as None. The train/test split is a per-patient hash rule (``fedfusion.data.patient_split``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedfusion.data.findings import Findings
from fedfusion.data.patient_records import PatientRecord, SiteCohort
from fedfusion.data.patient_split import is_test_patient
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME, FeatureCache
from fedfusion.data.slides.prepared_features import read_prepared_features
from fedfusion.data.slides.tile_encoder import get_tile_encoder
from fedfusion.data.tables.site_tables import read_site_tables
from fedfusion.errors import ConfigError, DataError
from fedfusion.study.config import STUDY_SUBTYPES, StudyConfig


def load_site_cohort(site_dir: Path, study: StudyConfig, *, gene_panel: Sequence[str],
                     cache_dir: Path | None = None, fallback_mpp: float | None = None,
                     skip_bad: bool = False, progress: Callable[[str], None] | None = None,
                     subtypes: Sequence[str] = STUDY_SUBTYPES,
                     encoder_file: Path | None = None, cnv_panel: Sequence[str] | None = None) -> SiteCohort:
    """Read one site's data into patient records split into train and test.

    Slide features are only read, from the cache in ``cache_dir`` (default ``<site_dir>/.fedfusion-cache``) that
    ``fedfusion.data.slides.prepare.prepare_slide_features`` (``fedfusion site prepare``) filled beforehand; a
    slide without features raises ``FeaturesNotPreparedError`` naming that command. A slide that cannot be used
    (found so when it was prepared) raises ``SlideError``, or with
    ``skip_bad`` is reported in ``SiteCohort.notes`` and its patient kept without it; with ``skip_bad`` a
    manifest patient without clinical labels is left out (a note) too. Other table problems always raise
    ``DataError`` naming the file and patient. ``encoder_file`` is the site's copy of a ``torchscript:`` or
    ``safetensors:`` study encoder (see ``fedfusion.data.slides.tile_encoder``). ``cnv_panel`` is the study's
    copy-number gene list (None: the copy-number layer is not read).
    """
    site_dir = Path(site_dir)
    report = progress or (lambda _msg: None)
    _check_study(study, gene_panel, subtypes, encoder_file, cnv_panel)
    if not site_dir.is_dir():
        raise DataError(f"site {site_dir.name}: directory {site_dir} does not exist")
    findings = Findings()
    tables = read_site_tables(site_dir, gene_panel, findings, subtypes, cnv_panel=cnv_panel, skip_bad=skip_bad)
    findings.raise_errors()
    notes = [str(w) for w in findings.warnings]
    entries, omics = tables.entries, tables.omics
    cache = FeatureCache(cache_dir if cache_dir is not None else site_dir / CACHE_DIRNAME, read_only=True)
    features, slide_notes = read_prepared_features(site_dir, entries, study, cache, cache_dir=cache_dir,
                                                   fallback_mpp=fallback_mpp, skip_bad=skip_bad,
                                                   encoder_file=encoder_file)
    notes.extend(slide_notes)

    train: list[PatientRecord] = []
    test: list[PatientRecord] = []
    for entry in entries:
        row = tables.clinical[entry.patient_id]
        bags = [features[s] for s in entry.slides if s in features]
        record = PatientRecord(
            patient_id=entry.patient_id,
            tile_features=np.concatenate(bags, axis=0) if bags else None,
            omics=None if omics is None or entry.omics_sample is None
            else omics.sample_vector(entry.omics_sample, entry.patient_id),
            clinical=row.covariates, time_months=row.time_months, event=row.event, subtype=row.subtype,
            copy_number=None if tables.copy_number is None or entry.cnv_sample is None
            else tables.copy_number.sample_vector(entry.cnv_sample, entry.patient_id))
        (test if is_test_patient(entry.patient_id, study.seed, study.test_fraction) else train).append(record)
    no_wsi = sum(1 for r in train + test if r.tile_features is None)
    no_omics = sum(1 for r in train + test if r.omics is None)
    no_cnv = sum(1 for r in train + test if r.copy_number is None)
    notes.append(f"{len(entries)} patients ({len(train)} train, {len(test)} test); {no_wsi} without slide "
                 f"features, {no_omics} without omics, {no_cnv} without copy number; features of {len(features)} "
                 "slides read from the feature cache")
    report(f"site {site_dir.name}: {notes[-1]}")
    return SiteCohort(site=site_dir.name, train=train, test=test, notes=notes)


def _check_study(study: StudyConfig, gene_panel: Sequence[str], subtypes: Sequence[str],
                 encoder_file: Path | None, cnv_panel: Sequence[str] | None) -> None:
    if len(gene_panel) != study.omics_dim:
        raise ConfigError(f"study config 'omics-dim' is {study.omics_dim} but the gene panel has "
                          f"{len(gene_panel)} genes")
    if cnv_panel is not None and len(cnv_panel) != study.cnv_dim:
        raise ConfigError(f"study config 'cnv-dim' is {study.cnv_dim} but the copy-number gene list has "
                          f"{len(cnv_panel)} genes")
    if len(subtypes) != study.num_subtypes:
        raise ConfigError(f"study config 'num-subtypes' is {study.num_subtypes} but the study names "
                          f"{len(subtypes)} subtypes {list(subtypes)}")
    if study.clinical_dim != 2:
        raise ConfigError(f"study config 'clinical-dim' must be 2 (age_z, sex) for this data path, "
                          f"got {study.clinical_dim}")
    feature_dim = get_tile_encoder(study.encoder, encoder_file=encoder_file).feature_dim
    if feature_dim != study.tile_feature_dim:
        raise ConfigError(f"study config 'tile-feature-dim' is {study.tile_feature_dim} but encoder "
                          f"'{study.encoder}' gives {feature_dim} features")
