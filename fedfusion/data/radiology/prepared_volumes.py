"""Read a site's prepared radiology features from its feature cache; never read a scan.

The training side of ``prepare.py``: every (volume, mask) of the manifest must have an entry in the cache. A
volume whose preparation failed is a ``VolumeError`` with the message recorded then (or, with ``skip_bad``, a note
and its patient kept without it); a volume without any entry makes the load fail with ``FeaturesNotPreparedError``
naming ``fedfusion site prepare``. A patient's input is the mean of its volumes' scaled features (``radiomics``;
a CNN encoder's features are used as they are).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedfusion.data.radiology.prepare import volume_owners
from fedfusion.data.radiology.radiomics import scale_features
from fedfusion.data.radiology.volume_key import volume_key
from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.prepare import PREPARE_COMMAND
from fedfusion.data.tables.manifest import ManifestEntry
from fedfusion.errors import FeaturesNotPreparedError, VolumeError
from fedfusion.study.schema import RADIOMICS, RadiologySpec


def read_prepared_volumes(site_dir: Path, entries: list[ManifestEntry], spec: RadiologySpec, cache: FeatureCache,
                          *, skip_bad: bool) -> tuple[dict[str, npt.NDArray[np.float32]], list[str]]:
    """Each patient's radiology input (patients without a usable volume are absent) and notes on skipped volumes."""
    scaled: dict[tuple[Path, Path | None], npt.NDArray[np.float32]] = {}
    notes: list[str] = []
    missing: list[Path] = []
    for (volume, mask), patient in volume_owners(entries).items():
        key = volume_key(volume, mask, spec)
        cached = cache.load(key)
        if cached is not None and cached.shape == (1, spec.width):
            scaled[(volume, mask)] = scale_features(cached[0], spec) if spec.encoder == RADIOMICS else cached[0]
            continue
        failure = cache.failure(key)
        if failure is None:
            missing.append(volume)
        elif skip_bad:
            notes.append(f"skipped volume of patient {patient}: {failure}")
        else:
            raise VolumeError(failure)
    if missing:
        command = shlex.join([*PREPARE_COMMAND.split(), str(site_dir)]) + " --schema <the study's schema TOML>"
        raise FeaturesNotPreparedError(site_dir.name, missing, command, kind="radiology volumes")
    inputs: dict[str, npt.NDArray[np.float32]] = {}
    for entry in entries:
        vectors = [scaled[pair] for pair in zip(entry.volumes, entry.masks, strict=True) if pair in scaled]
        if vectors:
            inputs[entry.patient_id] = np.mean(vectors, axis=0).astype(np.float32)
    return inputs, notes
