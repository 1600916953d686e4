"""A frozen encoder given as safetensors weights for an architecture defined in code, loaded from the site's file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.data.slides.tile_encoder import SAFETENSORS_PREFIX, SmallResNetEncoder, get_tile_encoder
from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig

ARCH = SmallResNetEncoder.name


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = SmallResNetEncoder()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[Path, str]:
    save_file(tensors, str(path))
    return path, f"{SAFETENSORS_PREFIX}{ARCH}:{file_sha256(path)}"


def test_weights_come_from_the_file_frozen_and_in_eval_mode(tmp_path: Path) -> None:
    weights = _weights(1)
    path, name = _save(tmp_path / "encoder.safetensors", weights)
    encoder = get_tile_encoder(name, "cpu", path)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, weights[key])
    tiles = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    reference = SmallResNetEncoder()
    reference.load_state_dict(weights)
    expected = reference.eval()(torch.from_numpy(tiles).permute(0, 3, 1, 2).float()).detach().numpy()
    np.testing.assert_allclose(encoder.encode(tiles), expected, rtol=1e-5, atol=1e-6)
    other_path, other_name = _save(tmp_path / "other.safetensors", _weights(2))
    assert not np.allclose(get_tile_encoder(other_name, "cpu", other_path).encode(tiles), expected)


def test_site_cohort_uses_the_safetensors_encoder(small_cohort: Path, tmp_path: Path) -> None:
    path, name = _save(tmp_path / "encoder.safetensors", _weights(3))
    site = read_cohort_index(small_cohort).sites[1]
    # The shipped scaling is random-conv-v1's (a site refuses it for this encoder: tests/data/test_reference_scaling)
    study = StudyConfig(encoder=name, schema=StudyConfig().spec.without_feature_scaling().to_json())
    prepared = prepare_slide_features(site.site_dir, study, cache_dir=tmp_path / "cache", device="cpu",
                                      encoder_file=path)
    assert prepared.ok and prepared.extracted == prepared.slides
    cohort = load_site_cohort(site.site_dir, study, cache_dir=tmp_path / "cache", encoder_file=path)
    bags = [p.tile_features for p in cohort.train + cohort.test if p.tile_features is not None]
    assert bags and all(b.shape[1] == SmallResNetEncoder.feature_dim and np.isfinite(b).all() for b in bags)


def test_bad_files_are_refused_naming_file_and_tensor(tmp_path: Path) -> None:
    weights = _weights(4)
    path, name = _save(tmp_path / "ok.safetensors", weights)
    with pytest.raises(ConfigError, match="set this site's node config 'encoder-file'"):
        get_tile_encoder(name)
    with pytest.raises(ConfigError, match=f"tile encoder file {path}: sha256 .* is not the study's"):
        get_tile_encoder(f"{SAFETENSORS_PREFIX}{ARCH}:{'ab' * 32}", "cpu", path)
    with pytest.raises(ConfigError, match="with an architecture in"):
        get_tile_encoder(f"{SAFETENSORS_PREFIX}vit-huge:{file_sha256(path)}", "cpu", path)
    missing_path, missing_name = _save(tmp_path / "missing.safetensors",
                                       {k: v for k, v in weights.items() if k != "stage2.conv1.weight"})
    with pytest.raises(ConfigError, match=rf"{missing_path}: .* lacks: \['stage2.conv1.weight'\]"):
        get_tile_encoder(missing_name, "cpu", missing_path)
    extra_path, extra_name = _save(tmp_path / "extra.safetensors", {**weights, "head.weight": torch.zeros(2, 2)})
    with pytest.raises(ConfigError, match=rf"{extra_path}: tensors \['head.weight'\] are not part of"):
        get_tile_encoder(extra_name, "cpu", extra_path)
    shaped_path, shaped_name = _save(tmp_path / "shape.safetensors",
                                     {**weights, "stem.0.weight": torch.zeros(32, 3, 5, 5)})
    with pytest.raises(ConfigError, match=rf"{shaped_path}: tensor 'stem.0.weight' has shape \[32, 3, 5, 5\], "
                                          r"architecture 'small-resnet-v1' expects \[32, 3, 7, 7\]"):
        get_tile_encoder(shaped_name, "cpu", shaped_path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=f"{garbage}: not a safetensors file"):
        get_tile_encoder(f"{SAFETENSORS_PREFIX}{ARCH}:{file_sha256(garbage)}", "cpu", garbage)
