"""Small study schemas and patient records shaped like the synthetic study (survival + subtype tasks), for tests.

The synthetic cohort's schema (``fedfusion/study/synthetic_schema.toml``) with smaller panels, other time bins or
fewer modalities, and ``patient`` to build a record of such a study from plain values.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.patient_records import ClassLabel, PatientRecord, SiteCohort, SurvivalLabel
from fedfusion.study.config import SYNTHETIC_SCHEMA_FILE, StudyConfig
from fedfusion.study.schema import StudySchema, feature_scaling_file, load_schema


def schema_json(*, genes: int = 5, cnv_genes: int = 0, time_bins: Sequence[float] = (12.0, 24.0, 36.0, 60.0),
                modalities: Sequence[str] = ("wsi", "omics", "clinical")) -> str:
    """The synthetic schema with ``genes`` expression genes, ``cnv_genes`` copy-number genes (0: no such layer);
    without its feature scaling (fitted to the full panels and the default encoder)."""
    base = load_schema(SYNTHETIC_SCHEMA_FILE).without_feature_scaling()
    expression, copy_number = base.omics
    layers = [dataclasses.replace(expression, genes=expression.genes[:genes])]
    if cnv_genes:
        layers.append(dataclasses.replace(copy_number, genes=copy_number.genes[:cnv_genes]))
    survival, subtype = base.tasks
    schema = StudySchema(modalities=tuple(modalities), covariates=base.covariates,
                         tasks=(dataclasses.replace(survival, time_bins=tuple(float(t) for t in time_bins)), subtype),
                         omics=tuple(layers), name="test")
    return schema.to_json()


def copy_schema(source_dir: Path, target_dir: Path) -> None:
    """Copy a cohort's ``study.toml`` and the feature-scaling file it names (if any) into ``target_dir``."""
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source_dir / "study.toml", target_dir / "study.toml")
    scaling = feature_scaling_file(source_dir / "study.toml")
    if scaling is not None:
        shutil.copy(scaling, target_dir / scaling.name)


def study_with(*, genes: int = 5, cnv_genes: int = 0, time_bins: Sequence[float] = (12.0, 24.0, 36.0, 60.0),
               modalities: Sequence[str] = ("wsi", "omics", "clinical"), **knobs: object) -> StudyConfig:
    """A ``StudyConfig`` with ``schema_json``'s schema and the given knobs; the fixed ``noise-multiplier`` unless the
    knobs name a ``target_epsilon`` (tests of calibration do)."""
    schema = schema_json(genes=genes, cnv_genes=cnv_genes, time_bins=time_bins, modalities=modalities)
    return StudyConfig(schema=schema, **{"target_epsilon": 0.0, **knobs})  # type: ignore[arg-type]


def patient(patient_id: str, tiles: npt.NDArray[np.float32] | None, expression: npt.NDArray[np.float32] | None,
            clinical: npt.NDArray[np.float32], time: float, event: int, subtype: int,
            copy_number: npt.NDArray[np.float32] | None = None, *, cnv_layer: bool = False) -> PatientRecord:
    """A record of a ``study_with`` study (survival then subtype task; a copy-number layer with ``cnv_layer``)."""
    omics = (expression, copy_number) if cnv_layer else (expression,)
    return PatientRecord(patient_id, tiles, omics, clinical, (SurvivalLabel(time, event), ClassLabel(subtype)))


def planted_cohort(n_train: int = 192, n_test: int = 96, seed: int = 0) -> SiteCohort:
    """Survival time and subtype driven by a latent risk visible in the tiles and the omics."""
    rng = np.random.default_rng(seed)
    patients = []
    for i in range(n_train + n_test):
        risk = rng.normal()
        tiles = rng.normal(size=(int(rng.integers(4, 20)), 8)).astype(np.float32)
        tiles[:, 0] += 1.5 * risk
        omics = rng.normal(size=20).astype(np.float32)
        omics[:3] += 1.5 * risk
        time = float(rng.exponential(24.0 * np.exp(-2.0 * risk)))
        censor = float(rng.uniform(10, 100))
        patients.append(patient(
            f"p{i}", tiles, None if i % 7 == 0 else omics, rng.normal(size=2).astype(np.float32),
            min(time, censor), int(time <= censor), int(np.digitize(risk, [-0.5, 0.5]))))
    return SiteCohort("planted", patients[:n_train], patients[n_train:])
