"""Self-normalizing network (Klambauer et al., 2017) for tabular inputs such as an omics panel."""

from __future__ import annotations

import math

import torch
from torch import nn


class SelfNormalizingNetwork(nn.Module):
    """``depth`` blocks of Linear + SELU + AlphaDropout with LeCun-normal weights and zero biases."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float, depth: int = 2) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for index in range(depth):
            linear = nn.Linear(in_dim if index == 0 else hidden_dim, hidden_dim)
            nn.init.normal_(linear.weight, mean=0.0, std=1.0 / math.sqrt(linear.in_features))
            nn.init.zeros_(linear.bias)
            blocks += [linear, nn.SELU(), nn.AlphaDropout(dropout)]
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, in_dim]`` to ``[B, hidden_dim]``."""
        out: torch.Tensor = self.layers(x)
        return out
