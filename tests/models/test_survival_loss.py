"""The discrete-time survival loss: hand-computed values, censoring convention, per-patient independence."""

from __future__ import annotations

import math

import torch
from study_schemas import study_with

from fedfusion.models.survival_loss import (
    UNKNOWN_LABEL,
    patient_loss,
    risk_score,
    survival_at_edges,
    survival_nll,
    time_to_bin,
)

TASKS = study_with().tasks  # survival (weight 1), subtype (weight 0.5, 3 classes)


def targets(time_bins: list[int], events: list[float], subtypes: list[int]) -> torch.Tensor:
    """``[B, 2, 2]`` targets of the survival and subtype tasks."""
    return torch.tensor([[[b, e], [s, 0.0]] for b, e, s in zip(time_bins, events, subtypes, strict=True)])


def test_time_to_bin_uses_left_closed_intervals() -> None:
    assert time_to_bin([0.0, 11.9, 12.0, 23.9, 24.0, 100.0], (12.0, 24.0)).tolist() == [0, 0, 1, 1, 2, 2]


def test_nll_matches_hand_computation_for_event_and_censoring() -> None:
    hazards = torch.tensor([0.1, 0.3, 0.6])
    logits = torch.logit(hazards).repeat(2, 1)
    nll = survival_nll(logits, torch.tensor([1, 1]), torch.tensor([1.0, 0.0]))
    event = -(math.log(0.9) + math.log(0.3))  # survived bin 0, died in bin 1
    censored = -(math.log(0.9) + math.log(0.7))  # survived bins 0 and 1
    torch.testing.assert_close(nll, torch.tensor([event, censored]))


def test_subtype_term_is_added_and_unknown_subtype_ignored() -> None:
    hazard = torch.zeros(2, 3)
    subtype_logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    loss = patient_loss((hazard, subtype_logits), targets([0, 0], [1.0, 1.0], [1, -1]), TASKS)
    ce = -torch.log_softmax(subtype_logits[0], 0)[1]
    torch.testing.assert_close(loss[0] - loss[1], TASKS[1].weight * ce)


def test_loss_and_gradient_of_a_patient_do_not_depend_on_other_patients() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    subtype_logits = torch.randn(4, 3, requires_grad=True)
    labels = targets([0, 2, 1, 2], [1.0, 0.0, 1.0, 1.0], [0, 1, -1, 1])
    loss = patient_loss((logits, subtype_logits), labels, TASKS)
    changed = logits.detach().clone()
    changed[2] += 5.0
    changed.requires_grad_(True)
    loss_changed = patient_loss((changed, subtype_logits), labels, TASKS)
    torch.testing.assert_close(loss[[0, 1, 3]], loss_changed[[0, 1, 3]])
    grad = torch.autograd.grad(loss.sum(), logits)[0]
    grad_changed = torch.autograd.grad(loss_changed.sum(), changed)[0]
    torch.testing.assert_close(grad[[0, 1, 3]], grad_changed[[0, 1, 3]])
    assert not torch.allclose(grad[2], grad_changed[2])


def test_risk_is_higher_for_higher_hazards() -> None:
    logits = torch.tensor([[-3.0, -3.0], [0.0, 0.0], [3.0, 3.0]])
    risk = risk_score(logits)
    assert risk[0] < risk[1] < risk[2]


def test_unknown_survival_label_contributes_nothing() -> None:
    hazard = torch.randn(2, 5)
    subtype_logits = torch.randn(2, 3)
    loss = patient_loss((hazard, subtype_logits), targets([UNKNOWN_LABEL, UNKNOWN_LABEL], [1.0, 0.0], [1, -1]), TASKS)
    ce = -torch.log_softmax(subtype_logits[0], 0)[1]
    torch.testing.assert_close(loss, torch.stack([TASKS[1].weight * ce, torch.tensor(0.0)]))


def test_survival_at_edges_is_the_product_of_one_minus_hazards() -> None:
    hazards = torch.tensor([[0.1, 0.3, 0.6]])
    survival = survival_at_edges(torch.logit(hazards))
    torch.testing.assert_close(survival, torch.tensor([[0.9, 0.9 * 0.7]]))
