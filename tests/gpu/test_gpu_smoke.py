"""The site's GPU end to end: tile encoding, site prepare, a DP train and evaluate round (skipped without CUDA).

On a machine where torch sees a CUDA device: the ``resnet18`` encoder (seeded random weights, nothing downloaded)
gives the CPU's features on generated tiles; ``site prepare`` on the GPU (reader processes feeding one encoder)
fills the cache with the CPU path's features; a DP round of the real site code (``SiteRound``: charge, train,
store, settle, then evaluate) runs on the GPU, and the model stays there, kept for the next round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from safetensors.torch import save_file

from fedfusion.data.cohort_index import SCHEMA_FILE, CohortSite, read_cohort_index
from fedfusion.data.findings import Findings
from fedfusion.data.slides.feature_cache import FeatureCache
from fedfusion.data.slides.prepare import prepare_slide_features, slide_owners
from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.data.slides.tile_encoder import SAFETENSORS_PREFIX, ResNet18Encoder, get_tile_encoder
from fedfusion.data.slides.tiling import TilingParams
from fedfusion.data.synthetic.histology import render_slide
from fedfusion.data.synthetic.sites import draw_site_profiles
from fedfusion.data.tables.manifest import MANIFEST_FILE, parse_manifest
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.site import model_cache
from fedfusion.site.node_context import resolve_site_context
from fedfusion.site.site_privacy import SitePrivacy
from fedfusion.site.site_round import SiteRound, SiteSession
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun
from fedfusion.study.schema import load_schema

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False): the GPU smoke test runs where a GPU is available")

TOLERANCE = 1e-2
"""Largest difference allowed between GPU and CPU features, relative to the largest CPU feature (cuDNN may use
TF32 and other algorithms than the CPU)."""


def assert_close(gpu: npt.NDArray[np.float32], cpu: npt.NDArray[np.float32]) -> None:
    assert gpu.shape == cpu.shape and gpu.dtype == np.float32
    scale = float(np.abs(cpu).max())
    assert scale > 0 and float(np.abs(gpu - cpu).max()) <= TOLERANCE * scale, float(np.abs(gpu - cpu).max()) / scale


def test_resnet18_encodes_tiles_on_the_gpu_as_on_the_cpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ResNet18Encoder().state_dict().items()}, str(weights))
    name = f"{SAFETENSORS_PREFIX}{ResNet18Encoder.name}:{file_sha256(weights)}"
    profile = draw_site_profiles(1, (1,), np.random.default_rng(0))[0]
    rgb = render_slide(896, 0.5, profile, np.random.default_rng(1))
    tiles = np.stack([rgb[y : y + 224, x : x + 224] for y in range(0, 896, 224) for x in range(0, 896, 224)])
    gpu = get_tile_encoder(name, "cuda", weights)
    assert all(t.device.type == "cuda" for t in gpu.state_dict().values())
    assert_close(gpu.encode(tiles), get_tile_encoder(name, "cpu", weights).encode(tiles))


@pytest.fixture(scope="module")
def site(small_cohort: Path) -> CohortSite:
    return read_cohort_index(small_cohort).sites[0]


@pytest.fixture(scope="module")
def study(small_cohort: Path) -> StudyConfig:
    """A small DP study on the cohort's schema (Flower's test helpers are not needed here)."""
    return StudyConfig(schema=load_schema(small_cohort / SCHEMA_FILE).to_json(), hidden_dim=8, local_epochs=1,
                       batch_size=4, tiles_per_patient=4, noise_multiplier=1.0, target_epsilon=0.0)


@pytest.fixture(scope="module")
def gpu_cache(site: CohortSite, study: StudyConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site's slides prepared on the GPU (reader processes feeding one encoder)."""
    cache_dir = tmp_path_factory.mktemp("gpu-cache")
    summary = prepare_slide_features(site.site_dir, study, cache_dir=cache_dir, device="cuda", workers=2)
    assert summary.ok and summary.extracted == summary.slides > 1, summary.report()
    assert summary.device.startswith("cuda")
    return cache_dir


def test_prepare_on_the_gpu_gives_the_cpu_features(site: CohortSite, study: StudyConfig, gpu_cache: Path,
                                                   tmp_path: Path) -> None:
    summary = prepare_slide_features(site.site_dir, study, cache_dir=tmp_path, device="cpu", workers=2)
    assert summary.ok and summary.extracted == summary.slides, summary.report()
    params = TilingParams.from_study(study)
    gpu, cpu = FeatureCache(gpu_cache), FeatureCache(tmp_path)
    for slide in slide_owners(parse_manifest(site.site_dir / MANIFEST_FILE, Findings(), study.spec)):
        key = gpu.key(slide, study.encoder, params, None)
        gpu_features, cpu_features = gpu.load(key), cpu.load(key)
        assert gpu_features is not None and cpu_features is not None
        assert_close(gpu_features, cpu_features)


def test_a_dp_round_trains_and_evaluates_on_the_gpu_and_the_model_stays_there(
        site: CohortSite, study: StudyConfig, gpu_cache: Path, tmp_path: Path) -> None:
    assert study.dp
    node_config = {"site-name": site.name, "data-dir": str(site.site_dir), "cache-dir": str(gpu_cache),
                   "ledger-dir": str(tmp_path / "ledger"), "device": "cuda"}
    session = SiteSession(StudyRun.of(study), resolve_site_context(node_config),
                          SitePrivacy(tmp_path / "ledger", SitePolicy(min_eval_patients=1)))
    model_cache.clear()
    weights = build_model(study, seed=study.training_seed).state_dict()
    kept = []
    for server_round in (1, 2):
        answer = SiteRound(session).train(weights, server_round=server_round, run_id=1)
        assert not answer.replayed and answer.reply.metrics["epsilon"] > 0
        assert all(t.device.type == "cpu" and bool(torch.isfinite(t).all()) for t in answer.reply.weights.values())
        metrics = SiteRound(session).evaluate(answer.reply.weights, server_round=server_round, run_id=1)
        assert np.isfinite(metrics["loss"]) and metrics["num-examples"] >= 1
        models = model_cache.kept_models()
        assert list(models) == [model_cache.model_key(study, torch.device("cuda"))]
        kept += models.values()
        assert all(t.device.type == "cuda" for t in kept[-1].state_dict().values())
        weights = answer.reply.weights
    assert kept[0] is kept[1]  # built once, kept on the GPU, loaded in place
    model_cache.clear()
