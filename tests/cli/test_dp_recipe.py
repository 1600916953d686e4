"""``--dp-recipe``: a named DP recipe's study keys beneath the user's own, dropped by ``--no-dp``; a site alone
beside a distributed-DP federation trains under the local-DP recipe."""

import argparse

import pytest

from fedfusion.cli.study_options import add_study_options, study_from_args
from fedfusion.errors import ConfigError
from fedfusion.study.config import DP_RECIPES, StudyConfig, local_dp_recipe


def study_of(*argv: str, **fixed: object) -> StudyConfig:
    parser = argparse.ArgumentParser()
    add_study_options(parser)
    return study_from_args(parser.parse_args(argv), **fixed)


def test_the_default_recipe_is_the_study_defaults() -> None:
    assert study_of() == StudyConfig() == study_of("--dp-recipe", "local")


def test_the_distributed_recipe_sets_its_keys_and_set_and_rounds_override_them() -> None:
    recipe = DP_RECIPES["distributed"]
    study = study_of("--dp-recipe", "distributed")
    assert {key: getattr(study, key) for key in recipe} == recipe and study.dp_mode == "distributed"
    changed = study_of("--dp-recipe", "distributed", "--rounds", "7", "--set", "sample-rate=0.5")
    assert (changed.num_server_rounds, changed.sample_rate, changed.dp_mode) == (7, 0.5, "distributed")


def test_no_dp_drops_the_recipe_and_an_unknown_recipe_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert study_of("--dp-recipe", "distributed", dp=False) == StudyConfig(dp=False)
    with pytest.raises(SystemExit):
        study_of("--dp-recipe", "central")
    assert "invalid choice: 'central'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs 'dp' = true"):
        study_of("--dp-recipe", "distributed", "--set", "dp=false")


def test_a_site_alone_beside_a_distributed_federation_trains_under_the_local_recipe() -> None:
    distributed = StudyConfig(hidden_dim=8).replace(**DP_RECIPES["distributed"])
    assert local_dp_recipe(distributed) == StudyConfig(hidden_dim=8)
    local = StudyConfig(num_server_rounds=3, server_learning_rate=0.5)
    assert local_dp_recipe(local) is local
