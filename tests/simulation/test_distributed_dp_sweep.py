"""The in-process distributed-DP sweep (benchmarks/distributed_dp_sweep.py) on a small real cohort: a run repeats
with its seeds, each noise draw differs, the server step is the study's, and local DP is refused."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from flower_site import prepare_site, small_study

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # a site package is named benchmarks

from distributed_dp_sweep import load_sites, main, train

from fedfusion.data.cohort_index import find_sites
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME
from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import build_model
from fedfusion.study.config import DP_RECIPES


@pytest.fixture(scope="module")
def cohort(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the small cohort whose sites' own caches hold their prepared features (the sweep prepares a
    simulation's way, into the site folder; the shared cohort stays read-only)."""
    copy = tmp_path_factory.mktemp("sweep") / "cohort"
    shutil.copytree(small_cohort, copy)
    for site in find_sites(copy):
        prepare_site(site, site.site_dir / CACHE_DIRNAME)
    return copy


def norm(arrays: dict[str, torch.Tensor]) -> float:
    return float(sum(torch.sum(v.double() ** 2) for v in arrays.values()) ** 0.5)


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return norm({k: a[k] - b[k] for k in a})


def test_runs_repeat_per_seed_and_draw_and_the_server_step_is_the_studys(cohort: Path) -> None:
    study = small_study(cohort, **{**DP_RECIPES["distributed"], "num_server_rounds": 1, "min_sites": 2})
    sites = load_sites(cohort, study)
    first, again, other_draw = train(study, sites), train(study, sites), train(study, sites, draw=1)
    assert distance(first, again) == 0.0
    assert distance(first, other_draw) > 0.01  # noise of sigma 1 over about 20 training patients moves the model
    # One round from the same initial model, gradient and noise: twice the server step, twice the move.
    initial = build_model(study, seed=study.training_seed).state_dict()
    double = train(study.replace(server_learning_rate=2 * study.server_learning_rate), sites)
    moved = {k: first[k] - initial[k] for k in first}
    twice = {k: 2 * v for k, v in moved.items()}
    assert distance({k: double[k] - initial[k] for k in first}, twice) < 1e-5 * norm(twice)
    with pytest.raises(ConfigError, match="distributed DP only"):
        train(study.replace(dp_mode="local", sample_rate=0.3), sites)


def test_main_prints_one_c_index_per_run(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = main(["--cohort-dir", str(cohort), "--seeds", "1", "--draws", "2", "--rounds", "1",
                   "--set", "min-sites=2"])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert "over 2 runs" in capsys.readouterr().out
