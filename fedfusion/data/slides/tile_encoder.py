"""Tile encoders: a batch of RGB tiles in, ``[batch, feature_dim]`` float32 features out.

``random-conv-v1`` is a fixed, untrained encoder: two convolution stages whose weights come from a constant seed
(the same at every site and in every run, whatever the study seed), pooled to per-channel mean and standard
deviation, plus optical-density colour statistics. It needs no download and never sees site data, yet it
separates stain colour and nuclear texture (size, density, darkness) linearly.

``torchscript:<sha256>`` is a frozen encoder the hospital already has (e.g. a public pathology foundation model
exported with ``torch.jit.save``): the study names the file's sha256, so every site provably uses the same
weights, and each site points its node config key ``encoder-file`` at its local copy. The module takes float32
``[batch, 3, h, w]`` RGB scaled to [0, 1] and returns ``[batch, feature_dim]``.

``safetensors:<arch>:<sha256>`` is a frozen encoder given as plain weights for one of the architectures defined
here (``ARCHITECTURES``): no code comes with the file, only tensors. The site's copy (node config
``encoder-file``) is hash-checked like a TorchScript file, then every tensor the architecture needs must be in
it with the right shape (no more, no fewer); the module is frozen and in eval mode. Nothing is ever downloaded.
``resnet18`` is torchvision's ResNet-18 written in plain torch with the same state-dict names, so a torchvision or
timm ``resnet18`` checkpoint saved as safetensors loads as is: its classifier head (``fc.*``) is ignored, and
BatchNorm's ``num_batches_tracked`` counters may be present or not (they do not change eval-mode outputs).

``TileEncoder.identity`` is what a loaded encoder's features depend on: the study's name for it (the feature
cache's key part), its architecture, its feature count and its weights (``seed:<n>`` for ``random-conv-v1``,
``sha256:<hex>`` of the checked file otherwise). A feature-scaling file records it (``fedfusion study
feature-scaling``) and a site checks it before applying the file's constants (``fedfusion.data.cohort``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from fedfusion.data.encoder_weights import checked_encoder_file, load_safetensors_weights
from fedfusion.errors import ConfigError
from fedfusion.study.feature_scaling import EncoderIdentity

TORCHSCRIPT_PREFIX = "torchscript:"
SAFETENSORS_PREFIX = "safetensors:"
RANDOM_CONV_SEED = 20240601
"""Seed of the fixed weights of ``random-conv-v1``; part of the encoder's identity, never the study seed."""


class EncodingBatch(NamedTuple):
    """A batch being encoded: its features (on a GPU: pinned host memory still being filled) and when they are."""

    features: torch.Tensor
    ready: torch.cuda.Event | None
    """Recorded after the copy back to the host on a CUDA device; None on the CPU (already computed)."""

    def result(self) -> npt.NDArray[np.float32]:
        """``[batch, feature_dim]`` float32 features, waiting for the device if needed."""
        if self.ready is None:
            return self.features.numpy().astype(np.float32, copy=False)
        self.ready.synchronize()
        return self.features.numpy().copy()  # the pinned block goes back to torch's pool


class TileEncoder(nn.Module):
    """Base of the registered tile encoders: ``encode`` maps uint8 tiles to float32 features."""

    name: str
    architecture: str
    feature_dim: int
    weights: str = ""
    """Where the weights come from: ``seed:<n>`` (fixed random weights) or ``sha256:<hex>`` (a checked file)."""
    ignored_prefixes: tuple[str, ...] = ()
    """Tensor-name prefixes a weights file may hold that this architecture does not use (a classifier head)."""

    def identity(self) -> EncoderIdentity:
        """What this encoder's features depend on (module doc)."""
        return EncoderIdentity(name=self.name, architecture=self.architecture, feature_dim=self.feature_dim,
                               weights=self.weights)

    def encode(self, tiles: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``[batch, h, w, 3]`` uint8 RGB tiles -> ``[batch, feature_dim]`` float32 features."""
        return self.start_encoding(tiles).result()

    @torch.no_grad()
    def start_encoding(self, tiles: npt.NDArray[np.uint8]) -> EncodingBatch:
        """Encode ``[batch, h, w, 3]`` uint8 RGB tiles; on a CUDA device return once the work is queued.

        On a CUDA device the batch is copied from pinned host memory without blocking the host, and the features
        come back into pinned memory the same way, so the caller can prepare the next batch meanwhile.
        """
        device = next(self.buffers()).device
        pixels = torch.from_numpy(np.ascontiguousarray(tiles))
        if device.type != "cuda":
            return EncodingBatch(self(pixels.permute(0, 3, 1, 2).float()), None)
        features: torch.Tensor = self(pixels.pin_memory().to(device, non_blocking=True).permute(0, 3, 1, 2).float())
        host = torch.empty(features.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(features, non_blocking=True)
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]  # unannotated in torch
        ready.record(torch.cuda.current_stream(device))
        return EncodingBatch(host, ready)


class RandomConvEncoder(TileEncoder):
    """``random-conv-v1``: optical-density colour statistics plus pooled responses of fixed random convolutions."""

    name = architecture = "random-conv-v1"
    feature_dim = 64
    weights = f"seed:{RANDOM_CONV_SEED}"
    _STAGE1, _STAGE2, _KERNEL = 12, 17, 5
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(RANDOM_CONV_SEED)
        k = self._KERNEL
        self.register_buffer("w1", _he_normal(rng, (self._STAGE1, 3, k, k)))
        self.register_buffer("b1", torch.from_numpy(rng.uniform(-0.5, 0.5, self._STAGE1).astype(np.float32)))
        self.register_buffer("w2", _he_normal(rng, (self._STAGE2, self._STAGE1, k, k)))
        self.register_buffer("b2", torch.from_numpy(rng.uniform(-0.5, 0.5, self._STAGE2).astype(np.float32)))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, h, w]`` float RGB in [0, 255] -> ``[batch, 64]`` features."""
        od = torch.log(256.0 / (rgb + 1.0))  # optical density: stain amount, ~0 on white background
        h1 = F.conv2d(od, self.w1, self.b1, stride=2, padding=self._KERNEL // 2).relu_()
        h2 = F.conv2d(F.avg_pool2d(h1, 2), self.w2, self.b2, stride=2, padding=self._KERNEL // 2).relu_()
        return torch.cat([_mean_std(od), _mean_std(h1), _mean_std(h2)], dim=1)


def _he_normal(rng: np.random.Generator, shape: tuple[int, int, int, int]) -> torch.Tensor:
    fan_in = shape[1] * shape[2] * shape[3]
    return torch.from_numpy((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))


def _mean_std(x: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean then standard deviation: ``[b, c, h, w]`` -> ``[b, 2c]``."""
    std, mean = torch.std_mean(x, dim=(2, 3))
    return torch.cat([mean, std], dim=1)


class SmallResNetEncoder(TileEncoder):
    """``small-resnet-v1``: a ResNet-style stem and two residual stages, global average pooled to 64 features.

    Only an architecture: its weights come from a site's safetensors file (``safetensors:small-resnet-v1:<sha>``).
    Takes RGB scaled to [0, 1], like the usual pathology backbones.
    """

    name = architecture = "small-resnet-v1"
    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 7, stride=2, padding=3), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        self.stage1 = _ResidualBlock(32, 32, stride=1)
        self.stage2 = _ResidualBlock(32, 64, stride=2)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, h, w]`` float RGB in [0, 255] -> ``[batch, 64]`` features."""
        pooled: torch.Tensor = self.stage2(self.stage1(self.stem(rgb / 255.0))).mean(dim=(2, 3))
        return pooled


class _ResidualBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity shortcut, or a 1x1 conv + BatchNorm projection when the width or
    stride changes (torchvision's ``BasicBlock``). ``projection_name`` is the projection's state-dict name:
    ``shortcut`` in ``small-resnet-v1``, torchvision's ``downsample`` in ``resnet18``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, projection_name: str = "shortcut") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.projection_name = projection_name
        setattr(self, projection_name,
                None if stride == 1 and in_channels == out_channels else
                nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                              nn.BatchNorm2d(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output."""
        out: torch.Tensor = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        projection: nn.Module | None = getattr(self, self.projection_name)
        shortcut: torch.Tensor = x if projection is None else projection(x)
        return (out + shortcut).relu()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The input normalisation torchvision's and timm's ImageNet ResNets were trained with."""


class ResNet18Encoder(TileEncoder):
    """``resnet18``: torchvision's ResNet-18 up to global average pooling, 512 features per tile.

    Only an architecture (weights from ``safetensors:resnet18:<sha>``); module and tensor names are torchvision's
    (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...). Takes RGB in [0, 255], scales it to
    [0, 1] and normalises it with the ImageNet mean and standard deviation, as torchvision's weights expect.
    """

    name = architecture = "resnet18"
    feature_dim = 512
    ignored_prefixes = ("fc.",)
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _resnet_layer(64, 64, stride=1)
        self.layer2 = _resnet_layer(64, 128, stride=2)
        self.layer3 = _resnet_layer(128, 256, stride=2)
        self.layer4 = _resnet_layer(256, 512, stride=2)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, h, w]`` float RGB in [0, 255] -> ``[batch, 512]`` features."""
        x = self.maxpool(self.bn1(self.conv1((rgb - self.mean) / self.std)).relu())
        pooled: torch.Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x)))).mean(dim=(2, 3))
        return pooled


def _resnet_layer(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A ResNet-18 stage: two basic blocks, the first one changing width and stride."""
    return nn.Sequential(_ResidualBlock(in_channels, out_channels, stride, "downsample"),
                         _ResidualBlock(out_channels, out_channels, 1, "downsample"))


ENCODERS: dict[str, Callable[[], TileEncoder]] = {RandomConvEncoder.name: RandomConvEncoder}
"""Registered tile encoders by name (the study's ``encoder`` key)."""
ARCHITECTURES: dict[str, Callable[[], TileEncoder]] = {RandomConvEncoder.name: RandomConvEncoder,
                                                       SmallResNetEncoder.name: SmallResNetEncoder,
                                                       ResNet18Encoder.name: ResNet18Encoder}
"""Architectures a ``safetensors:<arch>:<sha256>`` encoder can name; the weights come from the site's file."""


class TorchScriptEncoder(TileEncoder):
    """A user-supplied frozen TorchScript encoder (see the module docstring for its contract)."""

    architecture = "torchscript"

    def __init__(self, name: str, module: torch.jit.ScriptModule, tile_size: int = 224) -> None:
        super().__init__()
        self.name = name
        self.weights = f"sha256:{name.removeprefix(TORCHSCRIPT_PREFIX).lower()}"
        self.module = module
        self.register_buffer("_device_marker", torch.zeros(0))
        with torch.no_grad():
            self.feature_dim = int(self.module(torch.zeros(1, 3, tile_size, tile_size)).shape[-1])

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[batch, 3, h, w]`` float RGB in [0, 255] -> ``[batch, feature_dim]`` features."""
        features: torch.Tensor = self.module(rgb / 255.0)
        return features


@lru_cache(maxsize=8)
def get_tile_encoder(name: str, device: str = "cpu", encoder_file: Path | None = None) -> TileEncoder:
    """The encoder ``name`` in eval mode on ``device`` (one shared instance per process).

    ``torchscript:<sha256>`` loads ``encoder_file`` after checking that its sha256 is the one the study names.
    """
    if name.startswith(TORCHSCRIPT_PREFIX):
        encoder: TileEncoder = _load_torchscript(name, encoder_file)
    elif name.startswith(SAFETENSORS_PREFIX):
        encoder = _load_safetensors(name, encoder_file)
    elif name in ENCODERS:
        encoder = ENCODERS[name]()
    else:
        raise ConfigError(f"study config 'encoder': unknown tile encoder '{name}'; registered: {sorted(ENCODERS)}, "
                          f"'{TORCHSCRIPT_PREFIX}<sha256 of a TorchScript file>' or "
                          f"'{SAFETENSORS_PREFIX}<architecture>:<sha256 of a safetensors file>' with an "
                          f"architecture in {sorted(ARCHITECTURES)}")
    encoder.requires_grad_(False)
    return encoder.to(torch.device(device)).eval()


def _load_safetensors(name: str, encoder_file: Path | None) -> TileEncoder:
    """The named architecture with its weights from the site's hash-checked safetensors file."""
    arch, _, expected = name.removeprefix(SAFETENSORS_PREFIX).partition(":")
    if arch not in ARCHITECTURES or not expected:
        raise ConfigError(f"study config 'encoder' '{name}': expected '{SAFETENSORS_PREFIX}<architecture>:<sha256>' "
                          f"with an architecture in {sorted(ARCHITECTURES)}")
    path = checked_encoder_file(name, expected, encoder_file, "safetensors")
    encoder = ARCHITECTURES[arch]()
    load_safetensors_weights(encoder, path, arch, ignored_prefixes=encoder.ignored_prefixes)
    encoder.name = name
    encoder.weights = f"sha256:{expected.lower()}"
    return encoder


def _load_torchscript(name: str, encoder_file: Path | None) -> TorchScriptEncoder:
    encoder_file = checked_encoder_file(name, name.removeprefix(TORCHSCRIPT_PREFIX), encoder_file, "TorchScript")
    try:
        # torch.jit.load has no annotations in torch, so strict mypy refuses the call without this ignore.
        module = torch.jit.load(str(encoder_file), map_location="cpu")  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        raise ConfigError(f"tile encoder file {encoder_file}: not a TorchScript model ({exc})") from exc
    return TorchScriptEncoder(name, module.eval())
