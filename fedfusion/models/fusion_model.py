"""The patient-level model: modality encoders -> fusion -> one head per study task (survival hazards, class logits).

Inputs are one patient per row (the privacy unit): tile features ``[B, K, F]`` with a tile mask ``[B, K]``,
omics ``[B, G]`` (``StudyConfig.omics_input_dim``: RNA-seq panel, copy-number panel and per-layer present flags,
concatenated into one genomic input as in Pathomic Fusion), the modality-present mask ``[B, 3]`` (columns in
``fedfusion.study.schema.MODALITIES`` order), clinical covariates ``[B, C]``, radiomics features ``[B, R]``
(``schema.radiology_dim``; a small SNN branch like the clinical one). Only the study's modalities get an
encoder, so single-modality baselines are this same class built with ``modalities = "wsi"`` or ``"omics"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedfusion.models.attention_mil import GatedAttentionMIL
from fedfusion.models.fusion import build_fusion
from fedfusion.models.linear_survival import LinearSurvivalModel
from fedfusion.models.snn import SelfNormalizingNetwork
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import MODALITIES


class MultimodalFusionModel(nn.Module):
    """Encodes each modality, fuses them per ``fusion`` and predicts one output per task (``head_sizes``)."""

    def __init__(self, *, modalities: tuple[str, ...], tile_feature_dim: int, omics_dim: int, clinical_dim: int,
                 hidden_dim: int, fusion: str, head_sizes: tuple[int, ...], dropout: float,
                 radiology_dim: int = 0) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.modality_columns = [MODALITIES.index(m) for m in self.modalities]
        encoders: dict[str, Callable[[], nn.Module]] = {
            "wsi": lambda: GatedAttentionMIL(tile_feature_dim, hidden_dim, dropout),
            "omics": lambda: SelfNormalizingNetwork(omics_dim, hidden_dim, dropout),
            "clinical": lambda: SelfNormalizingNetwork(clinical_dim, hidden_dim, dropout, depth=1),
            "radiology": lambda: SelfNormalizingNetwork(radiology_dim, hidden_dim, dropout, depth=1),
        }
        self.encoders = nn.ModuleDict({m: encoders[m]() for m in self.modalities})
        self.fusion = build_fusion(fusion, len(self.modalities), hidden_dim, hidden_dim, dropout)
        self.heads = nn.ModuleList([nn.Linear(hidden_dim, size) for size in head_sizes])

    def forward(self, tiles: torch.Tensor, tile_mask: torch.Tensor, omics: torch.Tensor,
                modality_mask: torch.Tensor, clinical: torch.Tensor,
                radiology: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """One output per task, in schema order: hazard logits ``[B, time bins]`` or class logits ``[B, classes]``."""
        inputs = {"wsi": (tiles, tile_mask), "omics": (omics,), "clinical": (clinical,),
                  "radiology": (radiology if radiology is not None else clinical.new_zeros(clinical.shape[0], 0),)}
        embeddings = [self.encoders[m](*inputs[m]) for m in self.modalities]
        fused = self.fusion(embeddings, modality_mask[:, self.modality_columns])
        return tuple(head(fused) for head in self.heads)


StudyModel = MultimodalFusionModel | LinearSurvivalModel
"""A study's model (``StudyConfig.model``): both take the same inputs and give one output per task."""


def is_weight_matrix(shape: Sequence[int]) -> bool:
    """Whether a parameter of this shape is a weight matrix (two or more dimensions), the only parameters ridge and
    lasso penalise: biases and LayerNorm gains are not."""
    return len(shape) >= 2


def build_model(study: StudyConfig, seed: int | None = None) -> StudyModel:
    """The study's model (``model``: "fusion" or "linear"); with ``seed`` its initial weights are reproducible (and
    the global RNG is untouched)."""
    if seed is None:
        return _construct(study)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(study)


def _construct(study: StudyConfig) -> StudyModel:
    if study.model == "linear":
        return LinearSurvivalModel(modalities=tuple(study.modality_set), tile_feature_dim=study.tile_feature_dim,
                                   omics_dim=study.spec.omics_input_dim, clinical_dim=study.spec.clinical_dim,
                                   tasks=study.tasks, radiology_dim=study.spec.radiology_dim)
    return MultimodalFusionModel(
        modalities=tuple(study.modality_set), tile_feature_dim=study.tile_feature_dim,
        omics_dim=study.spec.omics_input_dim, clinical_dim=study.spec.clinical_dim, hidden_dim=study.hidden_dim,
        fusion=study.fusion, head_sizes=tuple(task.num_outputs for task in study.tasks), dropout=study.dropout,
        radiology_dim=study.spec.radiology_dim,
    )
