"""Discrete-time survival likelihood, the subtype loss and the risk score; all strictly per patient.

Time is cut into ``num_time_bins`` intervals by the study's inner edges ``e_0 < e_1 < ...``: bin 0 is
``[0, e_0)``, bin j is ``[e_{j-1}, e_j)``, the last bin is ``[e_last, inf)``. The model predicts a hazard
``h_j = P(death in bin j | alive at the start of bin j)`` per bin. For a patient whose time falls in bin ``b``:

- event (death observed):  log L = sum_{j<b} log(1 - h_j) + log h_b
- censored:                log L = sum_{j<=b} log(1 - h_j)   (alive through the censoring bin)

No term couples two patients (unlike the Cox partial likelihood), so clipping one patient's gradient bounds
exactly that patient's influence, as DP-SGD requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

SUBTYPE_LOSS_WEIGHT = 0.5
"""Weight of the subtype cross-entropy added to the survival NLL."""

LOSS_REDUCTION = "mean"
"""How ``batch_loss`` reduces per-patient losses; Opacus must be told the same (``loss_reduction``)."""

UNKNOWN_SUBTYPE = -1


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


def patient_loss(hazard_logits: torch.Tensor, subtype_logits: torch.Tensor, time_bin: torch.Tensor,
                 event: torch.Tensor, subtype: torch.Tensor) -> torch.Tensor:
    """Per-patient total loss ``[B]``: survival NLL + ``SUBTYPE_LOSS_WEIGHT`` x subtype CE (0 if unknown)."""
    subtype_ce = F.cross_entropy(subtype_logits, subtype, ignore_index=UNKNOWN_SUBTYPE, reduction="none")
    return survival_nll(hazard_logits, time_bin, event) + SUBTYPE_LOSS_WEIGHT * subtype_ce


def batch_loss(per_patient: torch.Tensor) -> torch.Tensor:
    """Mean of per-patient losses (``LOSS_REDUCTION``); 0 for an empty Poisson batch instead of NaN."""
    return per_patient.sum() / max(per_patient.shape[0], 1)


def risk_score(hazard_logits: torch.Tensor) -> torch.Tensor:
    """Risk ``[B]``: minus the sum over bins of the survival curve S_j = prod_{i<=j}(1 - h_i).

    The sum is the expected number of bins survived; higher risk means shorter predicted survival.
    """
    survival = torch.exp(torch.cumsum(F.logsigmoid(-hazard_logits), dim=1))
    return -survival.sum(dim=1)
