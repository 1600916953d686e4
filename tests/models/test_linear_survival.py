"""The linear survival model: the fusion model's contract (inputs, one output per task), a shared linear risk plus a
per-bin baseline, the masked tile mean, missing modalities, Opacus compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator
from study_schemas import patient, study_with

from fedfusion.data.patient_records import PatientRecord
from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import build_model
from fedfusion.models.linear_survival import LinearSurvivalModel, masked_tile_mean
from fedfusion.site.patient_bags import collate_full_bags
from fedfusion.study.config import StudyConfig

LINEAR = study_with(genes=5, cnv_genes=3, time_bins=(12, 24, 36), tile_feature_dim=6, model="linear")


def records(n: int, seed: int = 0) -> list[PatientRecord]:
    """Patients with 0-9 tiles; every third lacks RNA-seq, every second copy number."""
    rng = np.random.default_rng(seed)
    return [patient(f"p{i}", rng.normal(size=(tiles, 6)).astype(np.float32) if tiles else None,
                    None if i % 3 == 0 else rng.normal(size=5).astype(np.float32),
                    rng.normal(size=2).astype(np.float32), float(rng.uniform(0, 50)), int(rng.integers(0, 2)),
                    int(rng.integers(-1, 3)), None if i % 2 == 0 else rng.normal(size=3).astype(np.float32),
                    cnv_layer=True)
            for i, tiles in enumerate(rng.integers(0, 10, size=n))]


def randomized(study: StudyConfig) -> torch.nn.Module:
    """The study's linear model with random weights (it starts at zero)."""
    model = build_model(study)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    return model.eval()


@pytest.mark.parametrize("modalities", ["wsi", "omics", "clinical", "wsi,omics,clinical"])
def test_build_model_gives_one_linear_output_per_task(modalities: str) -> None:
    study = LINEAR.with_modalities(modalities.split(","))
    model = build_model(study, seed=0)
    assert isinstance(model, LinearSurvivalModel)
    widths = {"wsi": 6, "omics": 5 + 3 + 2, "clinical": 2}
    assert model.heads[0].risk.in_features == sum(widths[m] for m in modalities.split(","))
    hazard, subtype = model(*collate_full_bags(records(7), study).model_inputs())
    assert hazard.shape == (7, 4) and subtype.shape == (7, 3)
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters()), "starts at the null model"


def test_hazard_logits_are_one_shared_risk_plus_a_per_bin_baseline() -> None:
    model = randomized(LINEAR)
    hazard = model(*collate_full_bags(records(8), LINEAR).model_inputs())[0]
    differences = hazard - hazard[:, :1]  # x . w cancels: what is left is b_t - b_0, the same for every patient
    torch.testing.assert_close(differences, differences[:1].expand_as(differences))
    assert not torch.allclose(hazard[:, 0], hazard[0, 0].expand(8)), "the risk must depend on the patient"


def test_masked_tile_mean_ignores_padding_and_missing_modalities_are_not_read() -> None:
    tiles = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [99.0, 99.0]], [[99.0, 99.0]] * 3])
    mask = torch.tensor([[True, True, False], [False] * 3])
    torch.testing.assert_close(masked_tile_mean(tiles, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    model = randomized(LINEAR)
    patients = records(6)
    batch = collate_full_bags(patients, LINEAR)
    assert (batch.modality_mask[:, 1] == 0).any() and (~batch.tile_mask).any(), "the test must exercise both"
    garbage_tiles, garbage_omics = batch.tiles.clone(), batch.omics.clone()
    garbage_tiles[~batch.tile_mask] = 1e3
    garbage_omics[batch.modality_mask[:, 1] == 0] = 1e3
    outputs = model(*batch.model_inputs())
    again = model(garbage_tiles, batch.tile_mask, garbage_omics, batch.modality_mask, batch.clinical)
    for a, b in zip(outputs, again, strict=True):
        torch.testing.assert_close(a, b)


def test_linear_model_is_opacus_compatible_and_unknown_models_are_refused() -> None:
    assert ModuleValidator.validate(build_model(LINEAR), strict=False) == []
    assert all(isinstance(m, torch.nn.Linear) for m in build_model(LINEAR).modules() if not list(m.children()))
    with pytest.raises(ConfigError, match="'model'"):
        LINEAR.replace(model="cox")
