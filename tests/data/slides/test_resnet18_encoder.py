"""The ``resnet18`` architecture: torchvision's ResNet-18 in plain torch, weights from a site's safetensors file."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.data.slides.tile_encoder import SAFETENSORS_PREFIX, ResNet18Encoder, get_tile_encoder
from fedfusion.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Encode on one thread, as the slide path does (several threads are 10x slower on a shared 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _torchvision_names() -> set[str]:
    """The state-dict names of ``torchvision.models.resnet18()``, written out from torchvision's naming scheme."""
    names = {"conv1.weight", "fc.weight", "fc.bias", *(f"bn1.{p}" for p in BN)}
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            names |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight",
                      *(f"{prefix}.bn{i}.{p}" for i in (1, 2) for p in BN)}
        if layer > 1:
            names |= {f"layer{layer}.0.downsample.0.weight", *(f"layer{layer}.0.downsample.1.{p}" for p in BN)}
    return names


def _torchvision_checkpoint(seed: int) -> dict[str, torch.Tensor]:
    """A random-weight checkpoint shaped like torchvision's resnet18 (classifier head included)."""
    torch.manual_seed(seed)
    model = ResNet18Encoder()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    weights = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    return {**weights, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[Path, str]:
    save_file(tensors, str(path))
    return path, f"{SAFETENSORS_PREFIX}resnet18:{file_sha256(path)}"


def test_torchvision_checkpoint_round_trips_through_safetensors(tmp_path: Path) -> None:
    checkpoint = _torchvision_checkpoint(1)
    assert set(checkpoint) == _torchvision_names()
    path, name = _save(tmp_path / "resnet18.safetensors", checkpoint)
    encoder = get_tile_encoder(name, "cpu", path)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, checkpoint[key])
    tiles = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    features = encoder.encode(tiles)
    assert features.shape == (3, 512) and features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_array_equal(encoder.encode(tiles), features)
    np.testing.assert_allclose(encoder.encode(tiles[1:2]), features[1:2], rtol=1e-4, atol=1e-5)  # eval mode
    without_counters = {k: v for k, v in checkpoint.items() if not k.endswith("num_batches_tracked")}
    timm_path, timm_name = _save(tmp_path / "timm.safetensors", without_counters)
    np.testing.assert_array_equal(get_tile_encoder(timm_name, "cpu", timm_path).encode(tiles), features)


def test_mismatched_file_is_refused_naming_file_and_tensor(tmp_path: Path) -> None:
    checkpoint = _torchvision_checkpoint(3)
    shaped_path, shaped_name = _save(tmp_path / "resnet34-ish.safetensors",
                                     {**checkpoint, "layer4.1.conv2.weight": torch.zeros(512, 512, 1, 1)})
    with pytest.raises(ConfigError, match=rf"{shaped_path}: tensor 'layer4.1.conv2.weight' has shape "
                                          r"\[512, 512, 1, 1\], architecture 'resnet18' expects \[512, 512, 3, 3\]"):
        get_tile_encoder(shaped_name, "cpu", shaped_path)
    missing_path, missing_name = _save(tmp_path / "missing.safetensors",
                                       {k: v for k, v in checkpoint.items() if k != "layer3.0.downsample.0.weight"})
    with pytest.raises(ConfigError, match=rf"{missing_path}: .* lacks: \['layer3.0.downsample.0.weight'\]"):
        get_tile_encoder(missing_name, "cpu", missing_path)
    extra_path, extra_name = _save(tmp_path / "extra.safetensors", {**checkpoint, "layer5.0.conv1.weight":
                                                                    torch.zeros(1)})
    with pytest.raises(ConfigError, match=rf"{extra_path}: tensors \['layer5.0.conv1.weight'\] are not part of"):
        get_tile_encoder(extra_name, "cpu", extra_path)
