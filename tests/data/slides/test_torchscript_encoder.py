"""A hospital's own frozen TorchScript encoder: named by sha256 in the study, loaded from the site's copy."""

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.data.slides.tile_encoder import TORCHSCRIPT_PREFIX, get_tile_encoder
from fedfusion.errors import ConfigError, FeaturesNotPreparedError
from fedfusion.study.config import StudyConfig

FEATURES = 5


class _MeanColour(nn.Module):
    """A tiny stand-in for a pathology foundation model: per-channel means, padded to FEATURES outputs."""

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        means = rgb.mean(dim=(2, 3))
        return torch.cat([means, means[:, :1] * 2.0, means[:, 1:2] - means[:, 2:3]], dim=1)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("encoder") / "site-copy.pt"
    torch.jit.save(torch.jit.script(_MeanColour()), str(path))
    return path


def test_features_come_from_the_sites_torchscript_file(encoder_file: Path, small_cohort: Path, tmp_path: Path) -> None:
    name = TORCHSCRIPT_PREFIX + file_sha256(encoder_file)
    study = StudyConfig(encoder=name, tile_feature_dim=FEATURES,  # the shipped scaling is the default encoder's
                        schema=StudyConfig().spec.without_feature_scaling().to_json())
    site = read_cohort_index(small_cohort).sites[0]
    with pytest.raises(FeaturesNotPreparedError) as unprepared:
        load_site_cohort(site.site_dir, study, cache_dir=tmp_path / "cache",
                         encoder_file=encoder_file)
    command = unprepared.value.command
    assert command == (f"fedfusion site prepare {site.site_dir} --cache-dir {tmp_path / 'cache'} --set "
                       f"encoder={name} --encoder-file {encoder_file}")
    assert main([*shlex.split(command)[1:], "--device", "cpu"]) == 0  # the command named is the one that works
    cohort = load_site_cohort(site.site_dir, study, cache_dir=tmp_path / "cache",
                              encoder_file=encoder_file)
    bags = [p.tile_features for p in cohort.train + cohort.test if p.tile_features is not None]
    assert bags and all(b.shape[1] == FEATURES for b in bags)
    stacked = np.concatenate(bags)
    assert np.all((stacked[:, :3] > 0) & (stacked[:, :3] <= 1.0))  # the module saw RGB scaled to [0, 1]
    np.testing.assert_allclose(stacked[:, 3], 2 * stacked[:, 0], rtol=1e-5)


def test_wrong_or_missing_file_is_refused_with_the_reason(encoder_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set this site's node config 'encoder-file'"):
        get_tile_encoder(TORCHSCRIPT_PREFIX + "ab" * 32)
    with pytest.raises(ConfigError, match="is not the study's"):
        get_tile_encoder(TORCHSCRIPT_PREFIX + "ab" * 32, "cpu", encoder_file)
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a model")
    with pytest.raises(ConfigError, match="not a TorchScript model"):
        get_tile_encoder(TORCHSCRIPT_PREFIX + file_sha256(not_a_model), "cpu", not_a_model)
