"""The per-patient loss over the study's tasks: discrete-time survival likelihood, class cross-entropy; risk scores.

Time is cut into ``num_time_bins`` intervals by the study's inner edges ``e_0 < e_1 < ...``: bin 0 is
``[0, e_0)``, bin j is ``[e_{j-1}, e_j)``, the last bin is ``[e_last, inf)``. The model predicts a hazard
``h_j = P(death in bin j | alive at the start of bin j)`` per bin. For a patient whose time falls in bin ``b``:

- event (death observed):  log L = sum_{j<b} log(1 - h_j) + log h_b
- censored:                log L = sum_{j<=b} log(1 - h_j)   (alive through the censoring bin)

A classification or binary task adds its cross-entropy. The patient's loss is the schema-weighted sum over the
tasks whose label the patient has. No term couples two patients (unlike the Cox partial likelihood), so clipping
one patient's gradient bounds exactly that patient's influence, as DP-SGD requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from fedfusion.study.schema import Task

LOSS_REDUCTION = "mean"
"""How ``batch_loss`` reduces per-patient losses; Opacus must be told the same (``loss_reduction``)."""

UNKNOWN_LABEL = -1
"""Target of a task whose label the patient lacks (time bin or class index)."""


def time_to_bin(times: torch.Tensor | npt.NDArray[np.floating[Any]] | Sequence[float],
                edges: Sequence[float]) -> torch.Tensor:
    """Bin index (int64) of each time: the number of inner edges ``<= t``."""
    times_t = torch.as_tensor(times, dtype=torch.float64)
    return torch.bucketize(times_t, torch.tensor(edges, dtype=torch.float64), right=True)


def survival_nll(hazard_logits: torch.Tensor, time_bin: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Per-patient negative log-likelihood ``[B]`` of the discrete-time survival model (see module doc)."""
    log_hazard = F.logsigmoid(hazard_logits)
    log_survive = F.logsigmoid(-hazard_logits)
    bins = torch.arange(hazard_logits.shape[1], device=hazard_logits.device)
    time_bin = time_bin.view(-1, 1)
    survived_before = (log_survive * (bins < time_bin)).sum(dim=1)
    at_bin = bins == time_bin
    observed = event.to(hazard_logits.dtype)
    last_term = observed * (log_hazard * at_bin).sum(dim=1) + (1 - observed) * (log_survive * at_bin).sum(dim=1)
    return -(survived_before + last_term)


def patient_loss(outputs: Sequence[torch.Tensor], targets: torch.Tensor, tasks: Sequence[Task]) -> torch.Tensor:
    """Per-patient total loss ``[B]``: the weighted sum of each task's loss over the tasks the patient has a label for.

    ``targets`` is ``[B, tasks, 2]``: per task the time bin (survival) or class index, ``UNKNOWN_LABEL`` when
    unknown, and the event (survival; 0 otherwise).
    """
    total = torch.zeros(targets.shape[0], dtype=outputs[0].dtype, device=outputs[0].device)
    for index, (output, task) in enumerate(zip(outputs, tasks, strict=True)):
        target = targets[:, index, 0].long()
        known = target != UNKNOWN_LABEL
        if task.is_survival:
            loss = survival_nll(output, target.clamp(min=0), targets[:, index, 1]) * known
        else:
            loss = F.cross_entropy(output, target, ignore_index=UNKNOWN_LABEL, reduction="none")
        total = total + task.weight * loss
    return total


def batch_loss(per_patient: torch.Tensor) -> torch.Tensor:
    """Mean of per-patient losses (``LOSS_REDUCTION``); 0 for an empty Poisson batch instead of NaN."""
    return per_patient.sum() / max(per_patient.shape[0], 1)


def risk_score(hazard_logits: torch.Tensor) -> torch.Tensor:
    """Risk ``[B]``: minus the sum over bins of the survival curve S_j = prod_{i<=j}(1 - h_i).

    The sum is the expected number of bins survived; higher risk means shorter predicted survival.
    """
    survival = torch.exp(torch.cumsum(F.logsigmoid(-hazard_logits), dim=1))
    return -survival.sum(dim=1)


def survival_at_edges(hazard_logits: torch.Tensor) -> torch.Tensor:
    """``[B, bins - 1]``: the predicted probability of surviving past each inner bin edge,
    S(e_j) = prod_{i<=j}(1 - h_i)."""
    return torch.exp(torch.cumsum(F.logsigmoid(-hazard_logits), dim=1))[:, :-1]
