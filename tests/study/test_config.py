"""StudyConfig: one source of defaults, parsing of run configs, what is (not) part of a study, validation."""

import tomllib
from pathlib import Path

import pytest

from fedfusion.cli import main
from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig
from fedfusion.study.flower_app import write_flower_app
from fedfusion.study.run_config import CoordinatorSettings, StudyRun


def test_study_defaults_command_prints_the_dataclass_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "defaults"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert StudyConfig.from_run_config(printed) == StudyConfig() and not StudyConfig.from_run_config(printed).extra
    assert set(printed) == set(StudyConfig().to_run_config()) - {"schema"}  # the schema is a file (--schema)
    assert main(["study", "defaults", "--schema"]) == 0
    example = tomllib.loads(capsys.readouterr().out)
    assert [t["name"] for t in example["tasks"]] == [t.name for t in StudyConfig().tasks]


def test_app_manifest_carries_the_study_its_id_and_the_coordinator_settings(tmp_path: Path) -> None:
    run = StudyRun.of(StudyConfig(seed=4), "trial-1", CoordinatorSettings(results_dir="/results", round_timeout=9.0))
    app_config = tomllib.loads((write_flower_app(run, tmp_path) / "pyproject.toml").read_text())
    assert StudyRun.from_run_config(app_config["tool"]["flwr"]["app"]["config"]) == run


def test_node_facts_and_runtime_settings_are_not_study_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    keys = set(StudyConfig().to_run_config())
    assert not keys & {"device", "cohort-dir", "results-dir", "round-timeout", "study-id", "clinical-dim",
                       "num-subtypes"}
    assert main(["simulate", "--set", "device=cpu"]) == 2
    assert "unknown study config keys: ['device']" in capsys.readouterr().err


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
        ("schema", "{not json", "schema"),
        ("noise-multiplier", 0.0, "noise-multiplier"),
        ("fusion", "bilinear", "fusion"),
        ("delta", 1.5, "delta"),
        # small-cohort model and personalization
        ("model", "cox", "'model'"),
        ("personalization-epochs", -1, "personalization-epochs"),
    ],
)
def test_invalid_values_name_the_key(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        StudyConfig.from_run_config({key: value})


def test_schema_shapes_the_study() -> None:
    study = StudyConfig()
    assert study.modalities == "wsi,omics,clinical" and [t.name for t in study.tasks] == ["survival", "subtype"]
    assert study.tasks[0].num_outputs == 5 and study.spec.omics_input_dim == 200 + 40 + 2
    clinical_only = study.with_modalities(["clinical"])
    assert clinical_only.modality_set == {"clinical"} and clinical_only.schema != study.schema
    assert StudyConfig.from_run_config(clinical_only.to_run_config()) == clinical_only


def test_training_seed_moves_the_initial_model_and_is_part_of_the_study() -> None:
    """`seed` fixes the held-out patients; `training-seed` only the training randomness (init, tiles, dropout)."""
    import torch

    from fedfusion.models.fusion_model import build_model
    from fedfusion.study.identity import config_hash

    first, second = StudyConfig(), StudyConfig(training_seed=1)
    assert first.seed == second.seed and config_hash(first) != config_hash(second)
    one, other = (build_model(s, seed=s.training_seed).state_dict() for s in (first, second))
    assert any(not torch.equal(one[k], other[k]) for k in one)
