"""The study-fixed input scaling taken from a reference cohort (``fedfusion study feature-scaling``).

Per input column, the centre and scale a reference cohort's patients give: for the tile features, the mean and
standard deviation over patients of each patient's mean tile feature (what the linear model sees; the fusion
model's tiles spread about 1.4 times as much on the synthetic cohort); for each omics layer, the mean and standard
deviation over patients of the layer's transformed vector. A column spread less than a tenth of the modality's
median spread gets that tenth as its scale: an almost constant column (a tile feature the encoder rarely fires) is
not blown up to unit spread.

The reference must lie outside the study's patients (``fedfusion.study.feature_scaling``): public data, or for the
synthetic study a synthetic cohort of ``SYNTHETIC_REFERENCE_SEED``, a seed no study cohort uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedfusion.data.patient_records import PatientRecord
from fedfusion.errors import DataError
from fedfusion.study.feature_scaling import ColumnScaling
from fedfusion.study.schema import StudySchema

SYNTHETIC_REFERENCE_SEED = 9001
"""``fedfusion synth --seed 9001``: the synthetic study's reference cohort. No study, tuning or benchmark cohort
uses this seed (they use 0, 1 and 2)."""
MIN_SCALE_FRACTION = 0.1
"""The smallest scale of a column, as a fraction of the median scale of its modality's columns."""


def reference_scaling(records: Sequence[PatientRecord], schema: StudySchema
                      ) -> tuple[ColumnScaling | None, dict[str, tuple[tuple[str, ...], ColumnScaling]]]:
    """The tile features' scaling (None when the schema fuses no slides) and each omics layer's (its panel and
    scaling), from the unscaled records of a reference cohort; ``DataError`` when no patient has a modality."""
    wsi = None
    if "wsi" in schema.modalities:
        means = [p.tile_features.mean(axis=0) for p in records if p.tile_features is not None]
        if not means:
            raise DataError("reference cohort: no patient has slide features, so the tile features have no scaling")
        wsi = _columns(np.stack(means))
    omics = {}
    if "omics" in schema.modalities:
        for index, layer in enumerate(schema.omics):
            vectors = [v for p in records if (v := p.omics[index]) is not None]
            if not vectors:
                raise DataError(f"reference cohort: no patient has omics layer '{layer.name}'")
            omics[layer.name] = (layer.genes, _columns(np.stack(vectors)))
    return wsi, omics


def _columns(values: npt.NDArray[np.float32]) -> ColumnScaling:
    data = values.astype(np.float64)
    spread = data.std(axis=0)
    floor = MIN_SCALE_FRACTION * float(np.median(spread))
    if not floor > 0:
        raise DataError("reference cohort: most columns of a modality do not vary, so it gives no scale")
    return ColumnScaling(center=tuple(float(v) for v in data.mean(axis=0)),
                         scale=tuple(float(max(s, floor)) for s in spread))
