"""Gated-attention multiple-instance pooling of a patient's tile features (Ilse et al., 2018)."""

from __future__ import annotations

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to ``mask``; an all-masked row gives all-zero weights (no NaN).

    Every operation is row-wise, so each patient's weights depend only on that patient's tiles.
    """
    masked = scores.masked_fill(~mask, float("-inf"))
    row_max = masked.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(masked - row_max)
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


class GatedAttentionMIL(nn.Module):
    """Embeds each tile, then pools a bag ``[B, K, F]`` with masked gated attention into ``[B, hidden]``."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.tile_encoder = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        # Value and gate branches share one Linear (one per-sample-gradient hook instead of two).
        self.attention_value_gate = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.attention_score = nn.Linear(hidden_dim, 1)

    def forward(self, tiles: torch.Tensor, tile_mask: torch.Tensor) -> torch.Tensor:
        """Pool ``tiles`` ``[B, K, F]`` over the tiles where ``tile_mask`` ``[B, K]`` is true."""
        return self.pool(tiles, tile_mask)[0]

    def pool(self, tiles: torch.Tensor, tile_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bag embedding ``[B, hidden]`` and the attention weights ``[B, K]`` (zero on masked tiles)."""
        embedded = self.tile_encoder(tiles)
        value, gate = self.attention_value_gate(embedded).chunk(2, dim=-1)
        gated = torch.tanh(value) * torch.sigmoid(gate)
        weights = masked_softmax(self.attention_score(gated).squeeze(-1), tile_mask)
        return torch.einsum("bk,bkh->bh", weights, embedded), weights
