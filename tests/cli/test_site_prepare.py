"""`fedfusion site prepare`: the study's slide knobs from its config file or --set, the summary printed last, exit
codes with and without --skip-bad, JSON, and clear errors before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomli_w

from fedfusion.cli import main
from fedfusion.data.cohort import load_site_cohort
from fedfusion.data.slides.feature_cache import CACHE_DIRNAME
from fedfusion.errors import FeaturesNotPreparedError
from fedfusion.study.config import StudyConfig
from fedfusion.study.flower_app import write_flower_app
from fedfusion.study.run_config import StudyRun


def _site(small_cohort: Path, tmp_path: Path) -> Path:
    return shutil.copytree(small_cohort / "site-b", tmp_path / "site-b", ignore=shutil.ignore_patterns(CACHE_DIRNAME))


def test_prepare_prints_the_summary_last_and_a_rerun_skips_what_is_cached(
        small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(small_cohort, tmp_path)
    assert main(["site", "prepare", str(site), "--workers", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"preparing slide features of site site-b: 12 slides in its manifest, cache {site / CACHE_DIRNAME}"
    assert out[1] == "extracting tile features of 12 slides (0 cached) on cpu, 2 processes"
    assert out[-2].startswith("site site-b: 12 slides, ") and ": 0 already cached, 12 extracted, 0 failed (" in out[-2]
    assert out[-1] == f"OK: features of 12 slides ready in {site / CACHE_DIRNAME}"
    assert main(["site", "prepare", str(site), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cached"], summary["extracted"], summary["failed"], summary["ok"]) == (12, 0, 0, True)


@pytest.mark.parametrize("config_kind", ["study app pyproject.toml", "study defaults TOML"])
def test_the_study_config_file_and_set_decide_the_features(
        config_kind: str, small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(small_cohort, tmp_path)
    study = StudyConfig(tile_size=224, max_background=0.7, hidden_dim=8)
    if config_kind == "study app pyproject.toml":
        config = write_flower_app(StudyRun.of(study, "lung-1"), tmp_path / "app") / "pyproject.toml"
    else:
        config = tmp_path / "study.toml"
        config.write_text(tomli_w.dumps(study.to_run_config()))
    cache = tmp_path / "cache"
    argv = ["site", "prepare", str(site), "--study-config", str(config), "--set", "stain-normalization=reinhard",
            "--cache-dir", str(cache), "--workers", "1", "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr()
    assert not (site / CACHE_DIRNAME).exists(), "--cache-dir: nothing is written into the site's folder"
    cohort = load_site_cohort(site, study.replace(stain_normalization="reinhard"), cache_dir=cache)
    assert sum(r.tile_features is not None for r in cohort.train + cohort.test) == 12
    with pytest.raises(FeaturesNotPreparedError, match=r"--set tile-size=224 --set max-background=0\.7$"):
        load_site_cohort(site, study, cache_dir=cache)  # other knobs, other features


def test_a_bad_slide_fails_the_command_unless_skip_bad(small_cohort: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(small_cohort, tmp_path)
    victim = sorted((site / "slides").glob("*.tiff"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    assert main(["site", "prepare", str(site), "--workers", "1", "--device", "cpu"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-3] == "failed slides:" and out[-2].startswith(f"  - patient {victim.stem}: slide {victim}: file is "
                                                              "truncated or corrupt")
    assert out[-1].startswith("FAILED: 1 slides could not be prepared; fix them, or pass --skip-bad")

    assert main(["site", "prepare", str(site), "--skip-bad", "--json", "--workers", "1", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["ok"], summary["failed"], summary["extracted"] + summary["cached"]) == (True, 1, 11)
    assert summary["failures"][0]["patient_id"] == victim.stem
    assert summary["failures"][0]["message"].startswith(f"slide {victim}: file is truncated or corrupt")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "no-such-knob=1"], "--set: unknown study config keys ['no-such-knob']"),
        (["--set", "tile-size"], "--set expects KEY=VALUE"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--device", "tpu"], "device 'tpu' is not a device name"),
        (["--study-config", "missing.toml"], "study config missing.toml: file does not exist"),
        (["--set", "encoder=torchscript:" + "ab" * 32], "set this site's node config 'encoder-file'"),
    ],
)
def test_bad_options_exit_2_with_a_message_and_write_nothing(
        extra: list[str], fragment: str, small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    site = _site(small_cohort, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["site", "prepare", str(site), *extra]) == 2
    assert fragment in capsys.readouterr().err
    assert not (site / CACHE_DIRNAME).exists()


def test_a_missing_site_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site", "prepare", str(tmp_path / "nowhere")]) == 2
    assert f"site nowhere: directory {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
