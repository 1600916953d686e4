"""A deployed site's node config: skip-bad reaches the site's cohort loading; simulated nodes read theirs from file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.errors import ConfigError, SlideError
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.simulation.simulated_nodes import simulated_node_configs, simulated_nodes
from fedfusion.site.cohort_memo import load_cohort_once
from fedfusion.site.node_context import SIMULATED_NODES_ENV, resolve_site_context
from fedfusion.site.site_privacy import resolve_ledger_dir
from fedfusion.study.config import StudyConfig


def _node_config(site_dir: Path, cohort: Path, cache: Path, **extra: str) -> dict[str, str]:
    return {"site-name": "site-b", "data-dir": str(site_dir), "cache-dir": str(cache), "device": "cpu", **extra}


def test_node_config_skip_bad_reaches_the_loader(small_cohort: Path, tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    site_dir = shutil.copytree(small_cohort / "site-b", tmp_path / "site-b",
                               ignore=shutil.ignore_patterns(".fedfusion-cache"))
    victim = sorted((site_dir / "slides").glob("*.tiff"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    study = StudyConfig(seed=11)
    strict = resolve_site_context(_node_config(site_dir, small_cohort, tmp_path / "cache"))
    assert not strict.skip_bad
    prepare_slide_features(site_dir, study, cache_dir=tmp_path / "cache", device="cpu")  # stops at the victim
    with pytest.raises(SlideError, match=f"slide {victim}: file is truncated or corrupt"):
        load_cohort_once(strict, study, SitePolicy().split)
    lenient = resolve_site_context(_node_config(site_dir, small_cohort, tmp_path / "cache", **{"skip-bad": "true"}))
    assert prepare_slide_features(site_dir, study, cache_dir=tmp_path / "cache", device="cpu", skip_bad=True).ok
    cohort = load_cohort_once(lenient, study, SitePolicy().split)
    assert any(n.startswith(f"skipped slide of patient {victim.stem}: slide {victim}") for n in cohort.notes)
    assert sum(r.omics[1] is not None for r in cohort.train + cohort.test) >= 8  # the copy-number layer
    assert capfd.readouterr().err == "", "progress bars must stay silent when stderr is not a terminal"
    with pytest.raises(ConfigError, match="'skip-bad' must be true or false, got 'sometimes'"):
        resolve_site_context(_node_config(site_dir, small_cohort, tmp_path, **{"skip-bad": "sometimes"}))


def test_a_simulated_node_reads_its_node_config_from_the_simulated_nodes_file(
    small_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = read_cohort_index(small_cohort)
    configs = simulated_node_configs(index.sites, tmp_path / "results", "cpu")
    with simulated_nodes(configs, tmp_path / "results") as table:
        site = resolve_site_context({"partition-id": 1, "num-partitions": 2})
        assert table == tmp_path / "results" / "sites" / "nodes.json"
    assert (site.name, site.data_dir, site.device) == (index.sites[1].name, index.sites[1].site_dir, "cpu")
    monkeypatch.setenv(SIMULATED_NODES_ENV, str(table))
    assert resolve_ledger_dir({"partition-id": 1}, site) == tmp_path / "results" / "sites" / index.sites[1].name
    monkeypatch.delenv(SIMULATED_NODES_ENV)
    with pytest.raises(ConfigError, match="simulated node 0 has no node config: FEDFUSION_SIMULATED_NODES is not set"):
        resolve_site_context({"partition-id": 0})
    monkeypatch.setenv(SIMULATED_NODES_ENV, str(table))
    with pytest.raises(ConfigError, match=r"nodes.json: no node config for partition 5"):
        resolve_site_context({"partition-id": 5})
