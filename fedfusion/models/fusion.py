"""Fusion of per-modality patient embeddings into one representation.

Both fusions take the embeddings of the model's modalities and a ``present`` mask ``[B, M]``; a missing
modality contributes zeros and the mask itself is appended to the fused vector, so the network knows which
modalities it saw. Only Linear and LayerNorm hold parameters (Opacus computes exact per-patient gradients
for both; ``nn.Bilinear`` and BatchNorm are avoided on purpose).
"""

from __future__ import annotations

import torch
from torch import nn

KRONECKER_DIM = 8
"""Width each modality is projected to before the Kronecker product ((8 + 1) ** 3 = 729 for three modalities)."""


class ConcatFusion(nn.Module):
    """Concatenate the masked embeddings and the mask, then LayerNorm + Linear + ReLU."""

    def __init__(self, num_modalities: int, embed_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        in_dim = num_modalities * embed_dim + num_modalities
        self.project = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, embeddings: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Fuse ``M`` embeddings ``[B, embed_dim]`` given ``present`` ``[B, M]`` into ``[B, out_dim]``."""
        masked = [embedding * present[:, i : i + 1] for i, embedding in enumerate(embeddings)]
        fused: torch.Tensor = self.project(torch.cat([*masked, present], dim=1))
        return fused


class KroneckerFusion(nn.Module):
    """Pathomic-Fusion-style fusion: project each modality, append 1, take the outer product, flatten, Linear.

    Appending 1 keeps every unimodal and lower-order interaction term in the product, so a missing modality
    (projected embedding zeroed) leaves the others' terms intact.
    """

    def __init__(self, num_modalities: int, embed_dim: int, out_dim: int, dropout: float,
                 kronecker_dim: int = KRONECKER_DIM) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(embed_dim, kronecker_dim), nn.ReLU()) for _ in range(num_modalities)
        )
        in_dim = (kronecker_dim + 1) ** num_modalities + num_modalities
        self.project = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, embeddings: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Fuse ``M`` embeddings ``[B, embed_dim]`` given ``present`` ``[B, M]`` into ``[B, out_dim]``."""
        ones = present.new_ones(present.shape[0], 1)
        fused = ones
        for i, (projection, embedding) in enumerate(zip(self.projections, embeddings, strict=True)):
            factor = torch.cat([projection(embedding) * present[:, i : i + 1], ones], dim=1)
            fused = (fused.unsqueeze(2) * factor.unsqueeze(1)).flatten(1)
        out: torch.Tensor = self.project(torch.cat([fused, present], dim=1))
        return out


def build_fusion(kind: str, num_modalities: int, embed_dim: int, out_dim: int, dropout: float) -> nn.Module:
    """The fusion named by the study (``"kronecker"`` or ``"concat"``)."""
    fusions: dict[str, type[KroneckerFusion | ConcatFusion]] = {"kronecker": KroneckerFusion, "concat": ConcatFusion}
    return fusions[kind](num_modalities, embed_dim, out_dim, dropout)
