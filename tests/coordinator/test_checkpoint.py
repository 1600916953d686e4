"""The coordinator's checkpoint: written atomically after each round, refused for another study or a changed
config, and marked finished after the last round; the study id survives resubmission."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from study_schemas import study_with

from fedfusion.cli import main
from fedfusion.coordinator.checkpoint import Checkpoint, CoordinatorCheckpoint
from fedfusion.coordinator.server_optimizer import ServerOptimizerState
from fedfusion.errors import ConfigError, CorruptCheckpointError
from fedfusion.models.fusion_model import build_model
from fedfusion.study.config import StudyConfig
from fedfusion.study.identity import derived_study_id
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

STUDY = study_with(genes=20, num_server_rounds=3, hidden_dim=8)


def _checkpoints(folder: Path, study: StudyConfig = STUDY, study_id: str = "") -> CoordinatorCheckpoint:
    return CoordinatorCheckpoint(folder, study, StudyRun.of(study, study_id).study_id)


def _checkpoint(completed: int, seed: int = 0) -> Checkpoint:
    weights = build_model(STUDY, seed=seed).state_dict()
    rows = [{"round": r, "phase": "train", "epsilon": 1.5 * r} for r in range(1, completed + 1)]
    return Checkpoint(completed, STUDY.num_server_rounds, weights, site_rows=rows, round_rows=rows)


def test_saved_checkpoint_loads_back_with_weights_round_and_rows(tmp_path: Path) -> None:
    _checkpoints(tmp_path).save(_checkpoint(2))
    loaded = _checkpoints(tmp_path).load()
    assert loaded is not None and loaded.completed_round == 2 and not loaded.finished
    expected = build_model(STUDY, seed=0).state_dict()
    assert loaded.weights.keys() == expected.keys()
    assert all(torch.equal(loaded.weights[k], expected[k]) for k in expected)
    assert [row["round"] for row in loaded.site_rows] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["global-round-2.pt", "state.json"]


def test_server_optimizer_state_loads_back_and_a_torn_moments_file_is_refused(tmp_path: Path) -> None:
    moments = {"m/w": np.array([[0.5, -1.0]], dtype=np.float32), "v/w": np.array([[0.25, 1.0]], dtype=np.float32)}
    checkpoints = _checkpoints(tmp_path)
    checkpoints.save(replace(_checkpoint(1), server_optimizer=ServerOptimizerState("fedadam", 1, moments)))
    checkpoints.save(replace(_checkpoint(2), server_optimizer=ServerOptimizerState("fedadam", 2, moments)))
    loaded = checkpoints.load()
    assert loaded is not None and loaded.server_optimizer is not None
    assert (loaded.server_optimizer.rule, loaded.server_optimizer.step) == ("fedadam", 2)
    assert loaded.server_optimizer.moments.keys() == moments.keys()
    assert all(np.array_equal(loaded.server_optimizer.moments[k], moments[k]) for k in moments)
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == [
        "global-round-2.pt", "server-optimizer-round-2.pt", "state.json"]
    (checkpoints.directory / "server-optimizer-round-2.pt").write_bytes(b"torn")
    with pytest.raises(CorruptCheckpointError, match=r"server-optimizer-round-2\.pt does not match the sha256"):
        checkpoints.load()


def test_a_format_1_checkpoint_is_refused_naming_why(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path)
    checkpoints.save(_checkpoint(1))
    state = json.loads(checkpoints.state_path.read_text())
    checkpoints.state_path.write_text(json.dumps({**state, "format": 1}))
    with pytest.raises(CorruptCheckpointError, match=r"format 1 is not 2 .*holds no server optimizer state"):
        checkpoints.load()


def test_no_checkpoint_means_a_fresh_study(tmp_path: Path) -> None:
    assert _checkpoints(tmp_path).load() is None


def test_last_round_marks_the_study_finished(tmp_path: Path) -> None:
    _checkpoints(tmp_path).save(_checkpoint(3))
    loaded = _checkpoints(tmp_path).load()
    assert loaded is not None and loaded.finished
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["finished"] is True


def test_a_kill_before_the_commit_leaves_the_previous_round(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path)
    checkpoints.save(_checkpoint(1))
    # What a kill between writing round 2's model file and committing state.json leaves behind:
    torch.save(_checkpoint(2, seed=1).weights, checkpoints.directory / "global-round-2.pt")
    loaded = checkpoints.load()
    assert loaded is not None and loaded.completed_round == 1
    expected = build_model(STUDY, seed=0).state_dict()
    assert all(torch.equal(loaded.weights[k], expected[k]) for k in expected)
    checkpoints.save(_checkpoint(2, seed=1))  # the next save commits round 2 and drops round 1's model
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["global-round-2.pt", "state.json"]


def test_a_damaged_model_file_is_refused_not_restarted(tmp_path: Path) -> None:
    checkpoints = _checkpoints(tmp_path)
    checkpoints.save(_checkpoint(1))
    (checkpoints.directory / "global-round-1.pt").write_bytes(b"torn")
    with pytest.raises(CorruptCheckpointError,
                       match=r"checkpoint .*state.json is unreadable .*does not match the sha256"):
        checkpoints.load()


def test_changed_config_is_refused_naming_the_keys(tmp_path: Path) -> None:
    _checkpoints(tmp_path, STUDY, "trial-7").save(_checkpoint(1))
    changed = STUDY.replace(learning_rate=0.05, local_epochs=4)
    with pytest.raises(ConfigError, match=r"study 'trial-7' .* another config \('learning-rate' 0.03 -> 0.05, "
                                          r"'local-epochs' 1 -> 4\)"):
        _checkpoints(tmp_path, changed, "trial-7").load()


def test_another_study_in_the_same_results_folder_is_refused(tmp_path: Path) -> None:
    _checkpoints(tmp_path).save(_checkpoint(1))
    other = STUDY.replace(learning_rate=0.05)  # no study-id: a changed config is another study
    with pytest.raises(ConfigError, match=f"holds a checkpoint of study '{derived_study_id(STUDY)}', not of study "
                                          f"'{derived_study_id(other)}'"):
        _checkpoints(tmp_path, other).load()


def test_study_id_is_stable_and_ignores_where_the_study_runs() -> None:
    here = StudyRun.of(STUDY, coordinator=CoordinatorSettings(results_dir="/somewhere"))
    there = StudyRun.from_run_config({**here.to_run_config(), "study-id": "", "results-dir": "/elsewhere",
                                      "round-timeout": 5.0})
    assert here.study_id == there.study_id == derived_study_id(STUDY) and here.study_id.startswith("cfg-")
    assert there.study == STUDY and there.coordinator == CoordinatorSettings("/elsewhere", 5.0)
    assert derived_study_id(STUDY) != derived_study_id(STUDY.replace(seed=1))
    assert StudyRun.of(STUDY, "trial-7").study_id == "trial-7"
    assert StudyRun.from_run_config(StudyRun.of(STUDY, "trial-7").to_run_config()).study_id == "trial-7"


def test_round_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="'round-timeout' must be > 0"):
        StudyRun.from_run_config({"round-timeout": 0})


def test_simulate_refuses_a_results_folder_of_another_study_before_any_work(
    small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _checkpoints(tmp_path / "results", STUDY, "trial-7").save(_checkpoint(1))
    code = main(["simulate", "--sites", "2", "--cohort-dir", str(small_cohort), "--results-dir",
                 str(tmp_path / "results")])
    assert code == 2
    assert "holds a checkpoint of study 'trial-7', not of study 'cfg-" in capsys.readouterr().err
    assert not (tmp_path / "results" / "flower-app").exists()
