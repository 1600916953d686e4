"""Which torch device a site computes on: the one rule for ``device`` options and node config values."""

from __future__ import annotations

import torch

from fedfusion.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else CPU; ``"cpu"``; ``"cuda"``/``"cuda:N"``.

    ``ConfigError`` for another name or a GPU this machine lacks.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"device '{spec}' is not a device name (use 'auto', 'cpu' or 'cuda:N')") from exc
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= available:
            raise ConfigError(f"device '{spec}' requested but this machine has {available} CUDA device(s)")
    elif device.type != "cpu":
        raise ConfigError(f"device '{spec}' is not supported (use 'auto', 'cpu' or 'cuda:N')")
    return device
