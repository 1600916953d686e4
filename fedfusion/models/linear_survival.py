"""A small-cohort linear model: the per-patient discrete-time analogue of a (penalized) linear Cox model.

The input ``x`` is the concatenation of the study's modalities, in ``MODALITIES`` order: the tile features' masked
mean (wsi), the genomic vector (omics), the clinical covariates, the radiomics features (radiology); a modality the
patient lacks (modality mask 0) contributes zeros, as in the fusion model, where it is masked out of the fusion.
Each task has its own output layer (``heads``, one per task, schema order):

- survival: hazard logits per time bin ``x . w + b_t``: one shared linear risk (``risk``, no bias) plus a per-bin
  baseline (``baseline``: a bias-only layer, written as a Linear on a constant 1 so that Opacus' Linear
  grad sampler computes its per-patient gradient);
- classification: logits ``x . W + b`` (one Linear).

Only plain ``nn.Linear`` layers, so Opacus' "hooks" per-sample gradients apply unchanged, and the loss stays the
per-patient one (``survival_loss``), so DP-SGD's per-patient clipping holds. Weights start at zero (the null model:
every patient at the same baseline hazard), as a penalized Cox fit does; ridge/lasso penalties are the trainer's.
"""

from __future__ import annotations

import torch
from torch import nn

from fedfusion.study.schema import MODALITIES, Task


class SurvivalHead(nn.Module):
    """Hazard logits ``[B, bins]`` = shared linear risk ``x . w`` + per-bin baseline ``b_t``."""

    def __init__(self, input_dim: int, time_bins: int) -> None:
        super().__init__()
        self.risk = nn.Linear(input_dim, 1, bias=False)
        self.baseline = nn.Linear(1, time_bins, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The hazard logits of the patients ``x`` ``[B, input_dim]``."""
        result: torch.Tensor = self.risk(x) + self.baseline(x.new_ones(x.shape[0], 1))
        return result


class LinearSurvivalModel(nn.Module):
    """One linear output layer per task on the concatenated modality inputs; ``MultimodalFusionModel``'s forward."""

    def __init__(self, *, modalities: tuple[str, ...], tile_feature_dim: int, omics_dim: int, clinical_dim: int,
                 tasks: tuple[Task, ...], radiology_dim: int = 0) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.modality_columns = [MODALITIES.index(m) for m in self.modalities]
        widths = {"wsi": tile_feature_dim, "omics": omics_dim, "clinical": clinical_dim, "radiology": radiology_dim}
        input_dim = sum(widths[m] for m in self.modalities)
        self.heads = nn.ModuleList([
            SurvivalHead(input_dim, task.num_outputs) if task.is_survival else nn.Linear(input_dim, task.num_outputs)
            for task in tasks
        ])
        for parameter in self.parameters():
            nn.init.zeros_(parameter)

    def forward(self, tiles: torch.Tensor, tile_mask: torch.Tensor, omics: torch.Tensor,
                modality_mask: torch.Tensor, clinical: torch.Tensor,
                radiology: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """One output per task, in schema order: hazard logits ``[B, time bins]`` or class logits ``[B, classes]``."""
        inputs = {"wsi": masked_tile_mean(tiles, tile_mask), "omics": omics, "clinical": clinical,
                  "radiology": radiology if radiology is not None else clinical.new_zeros(clinical.shape[0], 0)}
        present = modality_mask[:, self.modality_columns]
        x = torch.cat([inputs[m] * present[:, [i]] for i, m in enumerate(self.modalities)], dim=1)
        return tuple(head(x) for head in self.heads)


def masked_tile_mean(tiles: torch.Tensor, tile_mask: torch.Tensor) -> torch.Tensor:
    """``[B, F]``: each patient's mean over its unmasked tiles (zeros for a patient without tiles)."""
    weights = tile_mask.to(tiles.dtype).unsqueeze(-1)
    return (tiles * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
