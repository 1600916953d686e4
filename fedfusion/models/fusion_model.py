"""The patient-level model: modality encoders -> fusion -> survival-hazard and subtype heads.

Inputs are one patient per row (the privacy unit): tile features ``[B, K, F]`` with a tile mask ``[B, K]``,
omics ``[B, G]`` (``StudyConfig.omics_input_dim``: RNA-seq panel, copy-number panel and per-layer present flags,
concatenated into one genomic input as in Pathomic Fusion), the modality-present mask ``[B, 3]`` (columns in
``fedfusion.study.config.MODALITIES`` order), clinical covariates ``[B, C]``. Only the study's modalities get an
encoder, so single-modality baselines are this same class built with ``modalities = "wsi"`` or ``"omics"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedfusion.models.attention_mil import GatedAttentionMIL
from fedfusion.models.fusion import build_fusion
from fedfusion.models.snn import SelfNormalizingNetwork
from fedfusion.study.config import MODALITIES, StudyConfig


class MultimodalFusionModel(nn.Module):
    """Encodes each modality, fuses them per ``fusion`` and predicts hazard logits and subtype logits."""

    def __init__(self, *, modalities: tuple[str, ...], tile_feature_dim: int, omics_dim: int, clinical_dim: int,
                 hidden_dim: int, fusion: str, num_time_bins: int, num_subtypes: int, dropout: float) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.modality_columns = [MODALITIES.index(m) for m in self.modalities]
        encoders: dict[str, Callable[[], nn.Module]] = {
            "wsi": lambda: GatedAttentionMIL(tile_feature_dim, hidden_dim, dropout),
            "omics": lambda: SelfNormalizingNetwork(omics_dim, hidden_dim, dropout),
            "clinical": lambda: SelfNormalizingNetwork(clinical_dim, hidden_dim, dropout, depth=1),
        }
        self.encoders = nn.ModuleDict({m: encoders[m]() for m in self.modalities})
        self.fusion = build_fusion(fusion, len(self.modalities), hidden_dim, hidden_dim, dropout)
        self.survival_head = nn.Linear(hidden_dim, num_time_bins)
        self.subtype_head = nn.Linear(hidden_dim, num_subtypes)

    def forward(self, tiles: torch.Tensor, tile_mask: torch.Tensor, omics: torch.Tensor,
                modality_mask: torch.Tensor, clinical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hazard logits ``[B, num_time_bins]`` and subtype logits ``[B, num_subtypes]``."""
        inputs = {"wsi": (tiles, tile_mask), "omics": (omics,), "clinical": (clinical,)}
        embeddings = [self.encoders[m](*inputs[m]) for m in self.modalities]
        fused = self.fusion(embeddings, modality_mask[:, self.modality_columns])
        return self.survival_head(fused), self.subtype_head(fused)


def build_model(study: StudyConfig, seed: int | None = None) -> MultimodalFusionModel:
    """The study's model; with ``seed`` its initial weights are reproducible (and the global RNG is untouched)."""
    if seed is None:
        return _construct(study)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(study)


def _construct(study: StudyConfig) -> MultimodalFusionModel:
    return MultimodalFusionModel(
        modalities=tuple(study.modality_set), tile_feature_dim=study.tile_feature_dim,
        omics_dim=study.omics_input_dim, clinical_dim=study.clinical_dim, hidden_dim=study.hidden_dim,
        fusion=study.fusion, num_time_bins=study.num_time_bins, num_subtypes=study.num_subtypes,
        dropout=study.dropout,
    )
