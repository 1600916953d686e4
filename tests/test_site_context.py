"""A deployed site's node config: copy-number gene list and skip-bad reach the site's cohort loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedfusion.errors import ConfigError, SlideError
from fedfusion.site.cohort_memo import load_cohort_once
from fedfusion.site.node_context import resolve_site_context
from fedfusion.study.config import StudyConfig


def _node_config(site_dir: Path, cohort: Path, cache: Path, **extra: str) -> dict[str, str]:
    return {"site-name": "site-b", "data-dir": str(site_dir), "gene-panel": str(cohort / "gene_panel.txt"),
            "cnv-panel": str(cohort / "cnv_panel.txt"), "cache-dir": str(cache), "device": "cpu", **extra}


def test_node_config_skip_bad_and_cnv_panel_reach_the_loader(small_cohort: Path, tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    site_dir = shutil.copytree(small_cohort / "site-b", tmp_path / "site-b",
                               ignore=shutil.ignore_patterns(".fedfusion-cache"))
    victim = sorted((site_dir / "slides").glob("*.tiff"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    study = StudyConfig(seed=11)
    strict = resolve_site_context(_node_config(site_dir, small_cohort, tmp_path / "cache"), study)
    assert strict.cnv_panel == small_cohort / "cnv_panel.txt" and not strict.skip_bad
    with pytest.raises(SlideError, match=f"slide {victim}: file is truncated or corrupt"):
        load_cohort_once(strict, study)
    lenient = resolve_site_context(_node_config(site_dir, small_cohort, tmp_path / "cache", **{"skip-bad": "true"}),
                                   study)
    cohort = load_cohort_once(lenient, study)
    assert any(n.startswith(f"skipped slide of patient {victim.stem}: slide {victim}") for n in cohort.notes)
    assert sum(r.copy_number is not None for r in cohort.train + cohort.test) >= 8
    assert capfd.readouterr().err == "", "progress bars must stay silent when stderr is not a terminal"
    with pytest.raises(ConfigError, match="'skip-bad' must be true or false, got 'sometimes'"):
        resolve_site_context(_node_config(site_dir, small_cohort, tmp_path, **{"skip-bad": "sometimes"}), study)
