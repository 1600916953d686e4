"""StudyConfig: the Flower app defaults, parsing of run configs, and validation messages."""

import tomllib
from pathlib import Path

import pytest

from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_app_config_equals_study_defaults() -> None:
    app_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert StudyConfig.from_run_config(app_config) == StudyConfig()
    assert set(app_config) == set(StudyConfig().to_run_config())


def test_run_config_round_trip_and_coercion() -> None:
    study = StudyConfig.from_run_config({"num-server-rounds": "7", "dp": "false", "learning-rate": 1,
                                         "fusion": "concat"})
    assert (study.num_server_rounds, study.dp, study.learning_rate, study.fusion) == (7, False, 1.0, "concat")
    assert StudyConfig.from_run_config(study.to_run_config()) == study


def test_unknown_keys_are_kept_not_dropped() -> None:
    assert StudyConfig.from_run_config({"my-new-knob": 3}).extra == {"my-new-knob": 3}


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("num-server-rounds", "two", "num-server-rounds"),
        ("num-server-rounds", 2.5, "num-server-rounds"),
        ("time-bins", "24,12", "time-bins"),
        ("modalities", "wsi,xray", "modalities"),
        ("noise-multiplier", 0.0, "noise-multiplier"),
        ("fusion", "bilinear", "fusion"),
        ("delta", 1.5, "delta"),
    ],
)
def test_invalid_values_name_the_key(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        StudyConfig.from_run_config({key: value})


def test_time_bins_give_bin_count() -> None:
    study = StudyConfig(time_bins="6,12,24")
    assert study.time_bin_edges == (6.0, 12.0, 24.0)
    assert study.num_time_bins == 4
