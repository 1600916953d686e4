"""The frozen 3-D CNN volume encoder (the schema's ``encoder = "cnn3d"``): fixed seeded weights, a safetensors
round trip, a mismatching file refused naming it and the tensor, and a cohort prepared and loaded with it."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from radiology_site import radiology_study
from safetensors.torch import save_file

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.cohort_index import SCHEMA_FILE
from fedfusion.data.radiology.prepare import prepare_volume_features
from fedfusion.data.radiology.volume_encoder import Cnn3dEncoder, get_volume_encoder, seeded_cnn3d
from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig
from fedfusion.study.schema import CNN3D, CNN3D_WIDTH, VOLUME_SAFETENSORS_PREFIX, StudySchema, load_schema

GRID = (16, 16, 16)


def _trained_like_weights(tmp_path: Path) -> tuple[Path, Cnn3dEncoder]:
    """A safetensors file of ``cnn3d`` weights other than the seeded ones, and the module they came from."""
    torch.manual_seed(3)
    source = Cnn3dEncoder().eval()
    for bn in (m for m in source.blocks if isinstance(m, torch.nn.BatchNorm3d)):
        bn.running_mean.uniform_(-0.1, 0.1)  # type: ignore[union-attr]
    path = tmp_path / "cnn3d.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return path, source


def _cnn_study(cohort_dir: Path, encoder: str = CNN3D) -> StudyConfig:
    schema = load_schema(cohort_dir / SCHEMA_FILE)
    assert schema.radiology is not None
    radiology = replace(schema.radiology, encoder=encoder, features=(), input_shape=GRID)
    return radiology_study(cohort_dir).replace(schema=replace(schema, radiology=radiology).to_json())


def test_seeded_cnn3d_is_fixed_and_pools_to_its_width() -> None:
    volumes = torch.rand(2, 1, *GRID, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, second = seeded_cnn3d().eval()(volumes), seeded_cnn3d().eval()(volumes)
    assert first.shape == (2, CNN3D_WIDTH)
    assert torch.equal(first, second)  # the same weights in every process: numpy's seeded generator
    assert not torch.allclose(first[0], first[1])
    encoder = get_volume_encoder(CNN3D)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_safetensors_weights_round_trip_and_a_mismatching_file_is_refused(tmp_path: Path) -> None:
    path, source = _trained_like_weights(tmp_path)
    name = VOLUME_SAFETENSORS_PREFIX + file_sha256(path)
    loaded = get_volume_encoder(name, "cpu", path)
    volume = torch.rand(1, 1, *GRID, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(volume), source(volume))
        assert not torch.allclose(loaded(volume), seeded_cnn3d().eval()(volume))

    weights = dict(source.state_dict())
    weights["blocks.4.weight"] = torch.zeros(16, 8, 5, 5, 5)
    bad = tmp_path / "bad.safetensors"
    save_file(weights, str(bad))
    message = (f"volume encoder file {bad}: tensor 'blocks.4.weight' has shape [16, 8, 5, 5, 5], architecture "
               "'cnn3d' expects [16, 8, 3, 3, 3]")
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_volume_encoder(VOLUME_SAFETENSORS_PREFIX + file_sha256(bad), "cpu", bad)
    with pytest.raises(ConfigError, match=f"volume encoder file {re.escape(str(bad))}: sha256 .* is not the study's"):
        get_volume_encoder(name, "cpu", bad)
    with pytest.raises(ConfigError, match="set this site's site prepare option --volume-encoder-file"):
        get_volume_encoder(name, "cpu", None)


def test_a_cohort_prepared_and_loaded_with_the_cnn_encoder(radiogenomic_cohort: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    site = Path(shutil.copytree(radiogenomic_cohort / "site-a", tmp_path / "site-a"))
    study = _cnn_study(radiogenomic_cohort)
    assert StudySchema.from_json(study.schema).radiology_dim == CNN3D_WIDTH
    summary = prepare_volume_features(site, study)  # the GPU when there is one
    assert summary.ok and summary.extracted == summary.volumes > 0
    cohort = load_site_cohort(site, study)
    vectors = [r.radiology for r in [*cohort.train, *cohort.test] if r.radiology is not None]
    assert len(vectors) == summary.volumes
    assert all(v.shape == (CNN3D_WIDTH,) and np.all(np.isfinite(v)) for v in vectors)
    assert np.ptp(np.stack(vectors), axis=0).max() > 0  # the tumours differ, so do their features

    # The site's weights file through `site prepare`: the encoder's identity is in the cache key, so nothing of the
    # seeded encoder's cache is reused.
    weights, _ = _trained_like_weights(tmp_path)
    schema_file = tmp_path / SCHEMA_FILE
    schema_file.write_text(re.sub(r"\nfeatures = \[.*?\n\]", f'\nencoder = "{VOLUME_SAFETENSORS_PREFIX}'
                                  f'{file_sha256(weights)}"\ninput-shape = {list(GRID)}',
                                  (radiogenomic_cohort / SCHEMA_FILE).read_text(encoding="utf-8"), flags=re.S))
    assert load_schema(schema_file).radiology == replace(study.spec.radiology, encoder=VOLUME_SAFETENSORS_PREFIX
                                                         + file_sha256(weights))
    assert main(["site", "prepare", str(site), "--schema", str(schema_file), "--workers", "1",
                 "--volume-encoder-file", str(weights)]) == 0
    assert f"{summary.volumes} radiology volumes: 0 already cached, {summary.volumes} extracted" in \
        capsys.readouterr().out
