"""Patients as model inputs: one dataset item per patient (the DP unit), with its bag of tiles.

Training samples a fixed ``K = study.tiles_per_patient`` tiles per patient per step (without replacement when
the bag has at least K tiles, otherwise all tiles plus masked padding), so every item has the same shape and
``__getitem__`` already returns the collated structure (what Opacus copies when the first Poisson batch is
empty). Inference uses each patient's full bag, padded to the batch's longest bag and masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from fedfusion.data.patient_records import PatientRecord
from fedfusion.errors import DataError
from fedfusion.models.survival_loss import time_to_bin
from fedfusion.study.config import MODALITIES, StudyConfig

PatientItem = tuple[torch.Tensor, ...]
"""One patient: tiles ``[K, F]``, tile_mask ``[K]``, omics ``[G]`` (``genomic_input``), modality_mask ``[3]``,
clinical ``[C]``, time_bin, event, subtype (scalars)."""


class PatientBatch(NamedTuple):
    """A batch of patients; field order is the order of a ``PatientItem``."""

    tiles: torch.Tensor
    tile_mask: torch.Tensor
    omics: torch.Tensor
    modality_mask: torch.Tensor
    clinical: torch.Tensor
    time_bin: torch.Tensor
    event: torch.Tensor
    subtype: torch.Tensor

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """The positional inputs of ``MultimodalFusionModel.forward``."""
        return self.tiles, self.tile_mask, self.omics, self.modality_mask, self.clinical

    def to(self, device: torch.device) -> PatientBatch:
        """The same batch on ``device``."""
        return PatientBatch(*(t.to(device) for t in self))


class PatientBagDataset(Dataset[PatientItem]):
    """Training items: each call samples K of the patient's tiles with the dataset's seeded generator."""

    def __init__(self, patients: Sequence[PatientRecord], study: StudyConfig, seed: int = 0) -> None:
        for record in patients:
            check_record(record, study)
        self.patients = list(patients)
        self.study = study
        self.time_bins = time_to_bin([p.time_months for p in self.patients], study.time_bin_edges)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, index: int) -> PatientItem:
        record = self.patients[index]
        k = self.study.tiles_per_patient
        tiles = _tiles_of(record, self.study)
        if len(tiles) > k:
            tiles = tiles[np.sort(self._rng.choice(len(tiles), size=k, replace=False))]
        return patient_item(record, tiles, k, int(self.time_bins[index]), self.study)


def collate_full_bags(patients: Sequence[PatientRecord], study: StudyConfig) -> PatientBatch:
    """Inference batch with every tile of every patient, padded to the longest bag (at least 1 slot)."""
    for record in patients:
        check_record(record, study)
    bags = [_tiles_of(p, study) for p in patients]
    slots = max([len(b) for b in bags] + [1])
    time_bins = time_to_bin([p.time_months for p in patients], study.time_bin_edges)
    items = [patient_item(p, b, slots, int(t), study) for p, b, t in zip(patients, bags, time_bins, strict=True)]
    return PatientBatch(*(torch.stack(column) for column in zip(*items, strict=True)))


def patient_item(record: PatientRecord, tiles: npt.NDArray[np.float32], slots: int, time_bin: int,
                 study: StudyConfig) -> PatientItem:
    """One patient's tensors with ``tiles`` (at most ``slots`` rows) zero-padded to ``slots`` and masked."""
    padded = np.zeros((slots, study.tile_feature_dim), dtype=np.float32)
    padded[: len(tiles)] = tiles
    tile_mask = torch.zeros(slots, dtype=torch.bool)
    tile_mask[: len(tiles)] = True
    clinical_present = bool(np.all(np.isfinite(record.clinical)))
    omics_present = record.omics is not None or (study.cnv_dim > 0 and record.copy_number is not None)
    present = {"wsi": len(tiles) > 0, "omics": omics_present, "clinical": clinical_present}
    return (
        torch.from_numpy(padded),
        tile_mask,
        torch.from_numpy(genomic_input(record, study)),
        torch.tensor([float(present[m]) for m in MODALITIES]),
        torch.as_tensor(np.nan_to_num(record.clinical, nan=0.0), dtype=torch.float32),
        torch.tensor(time_bin, dtype=torch.int64),
        torch.tensor(float(record.event)),
        torch.tensor(record.subtype, dtype=torch.int64),
    )


def genomic_input(record: PatientRecord, study: StudyConfig) -> npt.NDArray[np.float32]:
    """``[study.omics_input_dim]`` float32 input of the omics branch: each layer's panel (zeros when the patient
    lacks it), then, with a copy-number layer in the study, one present-flag per layer (RNA-seq, copy number)."""
    layers = [(record.omics, study.omics_dim)] + ([(record.copy_number, study.cnv_dim)] if study.cnv_dim else [])
    parts = [np.zeros(width, np.float32) if values is None else np.asarray(values, np.float32)
             for values, width in layers]
    if study.cnv_dim:
        parts.append(np.array([values is not None for values, _ in layers], dtype=np.float32))
    return np.concatenate(parts)


def check_record(record: PatientRecord, study: StudyConfig) -> None:
    """Raise ``DataError`` naming the patient when its arrays do not match the study's dimensions."""
    expected = {
        "tile_features": (record.tile_features, 2, study.tile_feature_dim),
        "omics": (record.omics, 1, study.omics_dim),
        "copy_number": (record.copy_number, 1, study.cnv_dim),
        "clinical": (record.clinical, 1, study.clinical_dim),
    }
    for name, (array, ndim, width) in expected.items():
        if array is not None and (array.ndim != ndim or array.shape[-1] != width):
            raise DataError(f"patient '{record.patient_id}': {name} has shape {array.shape}, "
                            f"expected {ndim}-D with last dimension {width}")
    if not (np.isfinite(record.time_months) and record.time_months >= 0):
        raise DataError(f"patient '{record.patient_id}': time_months must be finite and >= 0, got {record.time_months}")
    if record.event not in (0, 1):
        raise DataError(f"patient '{record.patient_id}': event must be 0 or 1, got {record.event}")
    if not -1 <= record.subtype < study.num_subtypes:
        raise DataError(f"patient '{record.patient_id}': subtype {record.subtype} outside [-1, {study.num_subtypes})")


def _tiles_of(record: PatientRecord, study: StudyConfig) -> npt.NDArray[np.float32]:
    if record.tile_features is None:
        return np.zeros((0, study.tile_feature_dim), dtype=np.float32)
    return record.tile_features
