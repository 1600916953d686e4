"""Opacus' per-patient gradients are exact for bags of tiles (fusion and linear models), and a noiseless DP step is the
clipped mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from study_schemas import patient, study_with
from torch.utils.data import DataLoader

from fedfusion.data.patient_records import PatientRecord
from fedfusion.models.fusion_model import build_model
from fedfusion.models.survival_loss import batch_loss, patient_loss
from fedfusion.privacy.dp_sgd import GRAD_SAMPLE_MODE, make_private
from fedfusion.site.patient_bags import PatientBagDataset, collate_full_bags

STUDY = study_with(genes=5, time_bins=(10, 20), dp=False, noise_multiplier=0.0, max_grad_norm=0.05, dropout=0.0,
                   hidden_dim=8, tile_feature_dim=6, tiles_per_patient=4)


def patients() -> list[PatientRecord]:
    """Variable-size bags (1 to 7 tiles, one without any), one patient without omics, unknown subtype."""
    rng = np.random.default_rng(7)
    bag_sizes = [3, 7, 0, 1, 5]
    return [
        patient(f"p{i}", rng.normal(size=(n, 6)).astype(np.float32) if n else None,
                None if i == 1 else rng.normal(size=5).astype(np.float32), rng.normal(size=2).astype(np.float32),
                float(rng.uniform(1, 30)), i % 2, [0, 2, -1, 1, 0][i])
        for i, n in enumerate(bag_sizes)
    ]


def per_patient_grads(model: torch.nn.Module, records: list[PatientRecord]) -> list[dict[str, torch.Tensor]]:
    """Plain autograd, one patient at a time, on the patient's own (unpadded) bag."""
    grads = []
    for record in records:
        batch = collate_full_bags([record], STUDY)
        model.zero_grad()
        batch_loss(patient_loss(model(*batch.model_inputs()), batch.targets, STUDY.tasks)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    return grads


def private_for(model: torch.nn.Module, records: list[PatientRecord], mode: str):
    loader = DataLoader(PatientBagDataset(records, STUDY), batch_size=len(records))
    return make_private(model, torch.optim.SGD(model.parameters(), lr=1.0), loader, STUDY,
                        noise_multiplier=STUDY.noise_multiplier, grad_sample_mode=mode)


@pytest.mark.parametrize("model_fusion", [("fusion", "kronecker"), ("fusion", "concat"), ("linear", "kronecker")])
@pytest.mark.parametrize("mode", ["hooks", "ew"])  # the mode in use and the one benchmarked against it
def test_grad_sample_equals_patient_by_patient_autograd(model_fusion: tuple[str, str], mode: str) -> None:
    records = patients()
    model_name, fusion = model_fusion
    study = STUDY.replace(model=model_name, fusion=fusion)
    reference = build_model(study, seed=1)
    expected = per_patient_grads(reference, records)
    model = build_model(study, seed=1)
    private = private_for(model, records, mode)
    batch = collate_full_bags(records, study)  # padded to the longest bag, masked
    losses = patient_loss(private.model(*batch.model_inputs()), batch.targets, study.tasks)
    batch_loss(losses).backward()
    named = {n.removeprefix("_module."): p for n, p in private.model.named_parameters()}
    for name, param in named.items():
        for i, grads in enumerate(expected):
            torch.testing.assert_close(param.grad_sample[i], grads[name], atol=1e-5, rtol=1e-4,
                                       msg=f"{mode}/{model_name}/{fusion}: patient {i}, parameter {name}")
    released = private.release()
    assert not any(hasattr(p, "grad_sample") for p in released.parameters())
    assert set(released.state_dict()) == set(reference.state_dict())


@pytest.mark.parametrize("model_name", ["fusion", "linear"])
def test_noiseless_dp_step_is_mean_of_clipped_per_patient_gradients(model_name: str) -> None:
    records = patients()
    study = STUDY.replace(model=model_name)
    reference = build_model(study, seed=2)
    expected = per_patient_grads(reference, records)
    flat = torch.stack([torch.cat([g.flatten() for g in grads.values()]) for grads in expected])
    clip = (STUDY.max_grad_norm / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
    assert (clip < 1).any(), "the test must exercise clipping"
    mean_clipped = (flat * clip[:, None]).mean(dim=0)

    model = build_model(study, seed=2)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    private = private_for(model, records, GRAD_SAMPLE_MODE)
    private.optimizer.zero_grad()
    batch = collate_full_bags(records, STUDY)
    batch_loss(patient_loss(private.model(*batch.model_inputs()), batch.targets, STUDY.tasks)).backward()
    private.optimizer.step()
    after = torch.cat([p.detach().flatten() for p in private.release().parameters()])
    torch.testing.assert_close(before - after, mean_clipped, atol=1e-6, rtol=1e-4)
