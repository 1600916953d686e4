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

from fedfusion.data.patient_records import PatientRecord, SurvivalLabel
from fedfusion.errors import DataError
from fedfusion.models.survival_loss import UNKNOWN_LABEL, time_to_bin
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import MODALITIES

PatientItem = tuple[torch.Tensor, ...]
"""One patient: tiles ``[K, F]``, tile_mask ``[K]``, omics ``[G]`` (``genomic_input``), modality_mask ``[3]``,
clinical ``[C]``, targets ``[tasks, 2]`` (``task_targets``), radiology ``[R]`` (``schema.radiology_dim``; zeros when
the patient has no usable volume, its modality flag 0)."""


class PatientBatch(NamedTuple):
    """A batch of patients; field order is the order of a ``PatientItem``."""

    tiles: torch.Tensor
    tile_mask: torch.Tensor
    omics: torch.Tensor
    modality_mask: torch.Tensor
    clinical: torch.Tensor
    targets: torch.Tensor
    radiology: torch.Tensor

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """The positional inputs of ``MultimodalFusionModel.forward``."""
        return self.tiles, self.tile_mask, self.omics, self.modality_mask, self.clinical, self.radiology

    def to(self, device: torch.device) -> PatientBatch:
        """The same batch on ``device``; to a GPU from pinned host memory, without blocking the host."""
        if device.type != "cuda":
            return PatientBatch(*(t.to(device) for t in self))
        return PatientBatch(*(t.pin_memory().to(device, non_blocking=True) for t in self))


class PatientBagDataset(Dataset[PatientItem]):
    """Training items: each call samples K of the patient's tiles with the dataset's seeded generator."""

    def __init__(self, patients: Sequence[PatientRecord], study: StudyConfig, seed: int = 0) -> None:
        for record in patients:
            check_record(record, study)
        self.patients = list(patients)
        self.study = study
        self.targets = [task_targets(p, study) for p in self.patients]
        """Each patient's labels as ``task_targets``, computed once (an item is built every step)."""
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, index: int) -> PatientItem:
        record = self.patients[index]
        k = self.study.tiles_per_patient
        tiles = _tiles_of(record, self.study)
        if len(tiles) > k:
            tiles = tiles[np.sort(self._rng.choice(len(tiles), size=k, replace=False))]
        return patient_item(record, tiles, k, self.targets[index], self.study)


def collate_full_bags(patients: Sequence[PatientRecord], study: StudyConfig) -> PatientBatch:
    """Inference batch with every tile of every patient, padded to the longest bag (at least 1 slot)."""
    for record in patients:
        check_record(record, study)
    bags = [_tiles_of(p, study) for p in patients]
    slots = max([len(b) for b in bags] + [1])
    items = [patient_item(p, b, slots, task_targets(p, study), study) for p, b in zip(patients, bags, strict=True)]
    return PatientBatch(*(torch.stack(column) for column in zip(*items, strict=True)))


def patient_item(record: PatientRecord, tiles: npt.NDArray[np.float32], slots: int, targets: torch.Tensor,
                 study: StudyConfig) -> PatientItem:
    """One patient's tensors with ``tiles`` (at most ``slots`` rows) zero-padded to ``slots`` and masked, and its
    ``targets`` (``task_targets``)."""
    padded = np.zeros((slots, study.tile_feature_dim), dtype=np.float32)
    padded[: len(tiles)] = tiles
    tile_mask = torch.zeros(slots, dtype=torch.bool)
    tile_mask[: len(tiles)] = True
    clinical_present = bool(np.all(np.isfinite(record.clinical)))
    omics_present = any(values is not None for values in record.omics)
    present = {"wsi": len(tiles) > 0, "omics": omics_present, "clinical": clinical_present,
               "radiology": record.radiology is not None}
    radiology = (np.zeros(study.spec.radiology_dim, dtype=np.float32) if record.radiology is None
                 else np.asarray(record.radiology, dtype=np.float32))
    return (
        torch.from_numpy(padded),
        tile_mask,
        torch.from_numpy(genomic_input(record, study)),
        torch.tensor([float(present[m]) for m in MODALITIES]),
        torch.as_tensor(np.nan_to_num(record.clinical, nan=0.0), dtype=torch.float32),
        targets,
        torch.from_numpy(radiology),
    )


def task_targets(record: PatientRecord, study: StudyConfig) -> torch.Tensor:
    """``[tasks, 2]`` float32: per task the time bin (survival) or class index (``UNKNOWN_LABEL`` when unknown) and
    the event (survival; 0 otherwise)."""
    rows: list[tuple[float, float]] = []
    for task, label in zip(study.tasks, record.labels, strict=True):
        if isinstance(label, SurvivalLabel):
            time_bin = int(time_to_bin([label.time], task.time_bins)[0]) if label.known else UNKNOWN_LABEL
            rows.append((float(time_bin), float(label.event)))
        else:
            rows.append((float(label.index), 0.0))
    return torch.tensor(rows, dtype=torch.float32)


def genomic_input(record: PatientRecord, study: StudyConfig) -> npt.NDArray[np.float32]:
    """``[schema.omics_input_dim]`` float32 input of the omics branch: each layer's panel (zeros when the patient
    lacks it), then, with two layers or more, one present-flag per layer."""
    layers = study.spec.omics
    if not layers:
        return np.zeros(0, dtype=np.float32)
    parts = [np.zeros(layer.width, np.float32) if values is None else np.asarray(values, np.float32)
             for values, layer in zip(record.omics, layers, strict=True)]
    if len(layers) > 1:
        parts.append(np.array([values is not None for values in record.omics], dtype=np.float32))
    return np.concatenate(parts)


def check_record(record: PatientRecord, study: StudyConfig) -> None:
    """Raise ``DataError`` naming the patient when its arrays or labels do not match the study's schema."""
    schema = study.spec
    if len(record.omics) != len(schema.omics) or len(record.labels) != len(schema.tasks):
        raise DataError(f"patient '{record.patient_id}': {len(record.omics)} omics layers and {len(record.labels)} "
                        f"labels, the study declares {len(schema.omics)} and {len(schema.tasks)}")
    expected = [("tile_features", record.tile_features, 2, study.tile_feature_dim),
                ("clinical", record.clinical, 1, schema.clinical_dim),
                ("radiology", record.radiology, 1, schema.radiology_dim)]
    expected += [(f"omics layer {layer.name}", values, 1, layer.width)
                 for values, layer in zip(record.omics, schema.omics, strict=True)]
    for name, array, ndim, width in expected:
        if array is not None and (array.ndim != ndim or array.shape[-1] != width):
            raise DataError(f"patient '{record.patient_id}': {name} has shape {array.shape}, "
                            f"expected {ndim}-D with last dimension {width}")
    for label, task in zip(record.labels, schema.tasks, strict=True):
        if isinstance(label, SurvivalLabel) != task.is_survival:
            raise DataError(f"patient '{record.patient_id}': label of task '{task.name}' is of the wrong kind")
        if isinstance(label, SurvivalLabel):
            if label.known and (label.time < 0 or label.event not in (0, 1)):
                raise DataError(f"patient '{record.patient_id}': task '{task.name}' needs time >= 0 and event 0/1, "
                                f"got {label.time}, {label.event}")
        elif not -1 <= label.index < task.num_outputs:
            raise DataError(f"patient '{record.patient_id}': task '{task.name}' class {label.index} outside "
                            f"[-1, {task.num_outputs})")


def _tiles_of(record: PatientRecord, study: StudyConfig) -> npt.NDArray[np.float32]:
    if record.tile_features is None:
        return np.zeros((0, study.tile_feature_dim), dtype=np.float32)
    return record.tile_features
