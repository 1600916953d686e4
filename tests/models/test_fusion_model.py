"""The fusion model: shapes for each fusion and modality subset, missing modalities, Opacus compatibility."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator
from study_schemas import patient, study_with
from torch import nn

from fedfusion.data.patient_records import PatientRecord
from fedfusion.models.attention_mil import GatedAttentionMIL
from fedfusion.models.fusion_model import build_model
from fedfusion.site.patient_bags import PatientBagDataset, collate_full_bags

BASE = study_with(genes=5, cnv_genes=3, time_bins=(12, 24, 36), hidden_dim=8, tile_feature_dim=6,
                  tiles_per_patient=4)


def records(n: int, seed: int = 0) -> list[PatientRecord]:
    """Patients with 0-9 tiles; every third lacks RNA-seq, every second copy number."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tiles = int(rng.integers(0, 10))
        out.append(patient(
            f"p{i}", rng.normal(size=(tiles, 6)).astype(np.float32) if tiles else None,
            None if i % 3 == 0 else rng.normal(size=5).astype(np.float32), rng.normal(size=2).astype(np.float32),
            float(rng.uniform(0, 50)), int(rng.integers(0, 2)), int(rng.integers(-1, 3)),
            None if i % 2 == 0 else rng.normal(size=3).astype(np.float32), cnv_layer=True))
    return out


@pytest.mark.parametrize("fusion", ["kronecker", "concat"])
@pytest.mark.parametrize("modalities", ["wsi", "omics", "clinical", "wsi,omics", "wsi,omics,clinical"])
def test_output_shapes_for_each_fusion_and_modality_subset(fusion: str, modalities: str) -> None:
    study = BASE.replace(fusion=fusion).with_modalities(modalities.split(","))
    model = build_model(study, seed=0).eval()
    batch = collate_full_bags(records(7), study)
    hazard, subtype = model(*batch.model_inputs())
    assert hazard.shape == (7, 4) and subtype.shape == (7, 3)
    assert torch.isfinite(hazard).all() and torch.isfinite(subtype).all()
    assert set(model.encoders) == set(study.modality_set)


def test_missing_modality_is_masked_not_read() -> None:
    model = build_model(BASE, seed=0).eval()
    batch = collate_full_bags(records(6), BASE)
    assert batch.modality_mask[0, 1] == 0 and batch.modality_mask[1, 1] == 1  # patient 0 lacks both omics layers
    garbage = batch.omics.clone()
    garbage[0] = 1e3
    outputs = model(*batch.model_inputs())
    outputs_garbage = model(batch.tiles, batch.tile_mask, garbage, batch.modality_mask, batch.clinical)
    for a, b in zip(outputs, outputs_garbage, strict=True):
        torch.testing.assert_close(a, b)


def test_all_masked_bag_gives_zero_embedding_and_finite_gradients() -> None:
    mil = GatedAttentionMIL(6, 8, dropout=0.0)
    tiles = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    embedding, weights = mil.pool(tiles, mask)
    assert torch.equal(embedding[1], torch.zeros(8)) and torch.equal(weights[1], torch.zeros(4))
    torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))
    embedding.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in mil.parameters())


def test_padding_does_not_change_predictions() -> None:
    model = build_model(BASE, seed=0).eval()
    patients = records(5)
    together = model(*collate_full_bags(patients, BASE).model_inputs())[0]
    alone = torch.cat([model(*collate_full_bags([p], BASE).model_inputs())[0] for p in patients])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("fusion", ["kronecker", "concat"])
def test_model_is_opacus_compatible(fusion: str) -> None:
    model = build_model(BASE.replace(fusion=fusion))
    assert ModuleValidator.validate(model, strict=False) == []
    banned = (nn.Bilinear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
    assert not any(isinstance(m, banned) for m in model.modules())


def test_build_model_seed_is_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = build_model(BASE, seed=3).state_dict(), build_model(BASE, seed=3).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_items_have_fixed_k_and_collated_structure() -> None:
    dataset = PatientBagDataset(records(6), BASE, seed=0)
    for index in range(len(dataset)):
        tiles, tile_mask, omics, modality_mask, clinical, targets, radiology = dataset[index]
        assert tiles.shape == (BASE.tiles_per_patient, 6) and tile_mask.shape == (BASE.tiles_per_patient,)
        n_tiles = len(dataset.patients[index].tile_features) if dataset.patients[index].tile_features is not None else 0
        assert int(tile_mask.sum()) == min(n_tiles, BASE.tiles_per_patient)
        assert omics.shape == (5 + 3 + 2,) and modality_mask.shape == (4,) and clinical.shape == (2,)
        assert radiology.shape == (0,) and modality_mask[3] == 0  # this study declares no radiology
        assert targets.shape == (2, 2)  # (survival, subtype) x (bin or class, event)
        record = dataset.patients[index]
        assert int(targets[0, 0]) == int(np.digitize(record.labels[0].time, [12, 24, 36]))
        assert int(targets[1, 0]) == record.labels[1].index and targets[0, 1] == record.labels[0].event


def test_copy_number_joins_the_omics_input_with_its_own_present_flag() -> None:
    patients = records(4)
    batch = collate_full_bags(patients, BASE)
    for row, record in zip(batch.omics.numpy(), patients, strict=True):
        rna, cnv, flags = row[:5], row[5:8], row[8:]
        expression, copy_number = record.omics
        np.testing.assert_array_equal(rna, expression if expression is not None else np.zeros(5))
        np.testing.assert_array_equal(cnv, copy_number if copy_number is not None else np.zeros(3))
        np.testing.assert_array_equal(flags, [expression is not None, copy_number is not None])
    # patient 3 has copy number only: the omics branch is present, RNA-seq flagged absent
    assert patients[3].omics[0] is None and patients[3].omics[1] is not None and batch.modality_mask[3, 1] == 1
    assert build_model(BASE, seed=0).encoders["omics"].layers[0].in_features == 5 + 3 + 2
    without = study_with(genes=5, time_bins=(12, 24, 36), tile_feature_dim=6)
    plain = [dataclasses.replace(p, omics=p.omics[:1]) for p in patients]
    assert collate_full_bags(plain, without).omics.shape == (4, 5)
