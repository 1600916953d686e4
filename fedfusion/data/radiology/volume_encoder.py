"""The frozen small 3-D CNN encoder of radiology volumes: the study's alternative to radiomics (``encoder``).

Architecture ``cnn3d`` (fixed): three blocks of Conv3d 3x3x3 + BatchNorm3d + ReLU + MaxPool3d 2 (1 -> 8 -> 16 ->
32 channels), globally average-pooled to ``CNN3D_WIDTH`` (32) features. Its input is the volume's normalised crop
(``radiomics.normalised_region``: the study's crop at its spacing, CT windowed onto [0, 1], MR/PT z-scored over
the volume's own region) resampled linearly onto the study's ``input-shape`` grid over the same physical extent;
the mask only places the crop.

``encoder = "cnn3d"`` takes its weights from the constant seed ``CNN3D_SEED`` (He-normal convolutions, BatchNorm
at identity), the same at every site and in every run: untrained, a baseline only, like the default slide encoder.
``safetensors:cnn3d:<sha256>`` takes them from the site's copy of that file (``fedfusion site prepare
--volume-encoder-file``), hash- and tensor-checked by ``fedfusion.data.encoder_weights``. Either way the encoder
is frozen, in eval mode, on the site's device (the GPU when there is one). Only ``site prepare`` runs it; training
reads the cached features, whose key holds the encoder's identity (``volume_key``).
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
import torch
from torch import nn

from fedfusion.data.encoder_weights import checked_encoder_file, load_safetensors_weights
from fedfusion.data.radiology.radiomics import normalised_region
from fedfusion.study.schema import CNN3D, CNN3D_WIDTH, VOLUME_SAFETENSORS_PREFIX, RadiologySpec

CNN3D_SEED = 20261201
"""Seed of ``cnn3d``'s fixed weights; part of the encoder's identity (and cache key), never the study seed."""
CHANNELS = (8, 16, CNN3D_WIDTH)
VOLUME_ENCODER = "volume encoder"
ENCODER_FILE_OPTION = "site prepare option --volume-encoder-file"


class Cnn3dEncoder(nn.Module):
    """``cnn3d``: ``[batch, 1, z, y, x]`` normalised intensities -> ``[batch, CNN3D_WIDTH]`` pooled features."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise((1, *CHANNELS)):
            layers += [nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ReLU(), nn.MaxPool3d(2)]
        self.blocks = nn.Sequential(*layers)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Global average of the last block's channels."""
        pooled: torch.Tensor = self.blocks(volume).mean(dim=(2, 3, 4))
        return pooled


def seeded_cnn3d() -> Cnn3dEncoder:
    """``cnn3d`` with its fixed weights from ``CNN3D_SEED`` (numpy's generator: the same on every machine)."""
    encoder = Cnn3dEncoder()
    rng = np.random.default_rng(CNN3D_SEED)
    for conv in (m for m in encoder.blocks if isinstance(m, nn.Conv3d)):
        fan_in = conv.weight[0].numel()
        weight = rng.standard_normal(tuple(conv.weight.shape)) * np.sqrt(2.0 / fan_in)
        conv.weight.data = torch.from_numpy(weight.astype(np.float32))
        assert conv.bias is not None  # Conv3d's default bias=True
        conv.bias.data = torch.from_numpy(rng.uniform(-0.1, 0.1, conv.out_channels).astype(np.float32))
    return encoder


@lru_cache(maxsize=4)
def get_volume_encoder(name: str, device: str = "cpu", encoder_file: Path | None = None) -> Cnn3dEncoder:
    """The study's CNN encoder ``name`` (``cnn3d`` or ``safetensors:cnn3d:<sha256>``), frozen, in eval mode, on
    ``device`` (one shared instance per process); ``ConfigError`` for a missing, changed or mismatching file."""
    if name == CNN3D:
        encoder = seeded_cnn3d()
    else:
        path = checked_encoder_file(name, name.removeprefix(VOLUME_SAFETENSORS_PREFIX), encoder_file,
                                    "safetensors", what=VOLUME_ENCODER, setting=ENCODER_FILE_OPTION)
        encoder = Cnn3dEncoder()
        load_safetensors_weights(encoder, path, CNN3D, VOLUME_ENCODER)
    encoder.requires_grad_(False)
    return encoder.to(torch.device(device)).eval()


@torch.no_grad()
def cnn_features(encoder: Cnn3dEncoder, image: sitk.Image, mask: sitk.Image | None, spec: RadiologySpec,
                 where: str) -> npt.NDArray[np.float32]:
    """``encoder``'s ``[CNN3D_WIDTH]`` features of the volume's normalised crop on the study's ``input-shape``."""
    region, _ = normalised_region(image, mask, spec, where)
    grid = sitk.GetArrayFromImage(_resample_to_shape(region, spec.input_shape))  # [z, y, x]
    device = next(encoder.parameters()).device
    features: torch.Tensor = encoder(torch.from_numpy(grid).to(device)[None, None])
    return features[0].cpu().numpy().astype(np.float32)


def _resample_to_shape(image: sitk.Image, shape: tuple[int, int, int]) -> sitk.Image:
    """``image`` resampled linearly onto ``shape`` voxels spanning the same physical extent."""
    old_spacing = np.asarray(image.GetSpacing())
    spacing = old_spacing * np.asarray(image.GetSize()) / np.asarray(shape)
    shift = np.asarray(image.GetDirection()).reshape(3, 3) @ ((spacing - old_spacing) / 2)
    origin = np.asarray(image.GetOrigin()) + shift  # voxel centres: the grid's outer corner stays in place
    return sitk.Resample(image, [int(n) for n in shape], sitk.Transform(), sitk.sitkLinear,
                         [float(v) for v in origin], [float(v) for v in spacing], image.GetDirection(), 0.0,
                         sitk.sitkFloat32)
