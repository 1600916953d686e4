"""A deployed study's identity and resubmission: the study id in the app's run config, the same FAB on every
submission, and the coordinator's limit on resubmitting a study that keeps being interrupted. Real FABs built with
Flower's own builder; the daemon's end-to-end resume is in tests/e2e/test_deployment.py."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from fedfusion.cli import main
from fedfusion.deployment.coordinator.state import CoordinatorPaths
from fedfusion.deployment.coordinator.study import app_hash, prepare_study, resubmission
from fedfusion.deployment.coordinator.study_resume import MAX_SUBMISSIONS, StudyResumer
from fedfusion.deployment.coordinator.study_state import FAILED, RUNNING, read_study, write_study
from fedfusion.study.config import StudyConfig


def test_the_study_id_is_in_the_app_and_a_resubmission_keeps_the_same_fab(tmp_path: Path) -> None:
    paths = CoordinatorPaths(tmp_path / "state")
    record = prepare_study(paths, StudyConfig(num_server_rounds=3), "s1")
    config = tomllib.loads((Path(record.app_dir) / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert config["study-id"] == "s1" and config["results-dir"] == record.results_dir
    write_study(paths, replace(record, status=RUNNING))
    again = resubmission(paths, "s1")
    assert (again.app_dir, again.fab_hash, again.submissions) == (record.app_dir, record.fab_hash, 2)
    assert app_hash(Path(again.app_dir)) == record.fab_hash  # what the sites approved


def test_a_study_id_is_an_option_not_a_study_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["study", "prepare", "--state-dir", str(tmp_path / "state"), "--study-id", "s1",
                 "--set", "study-id=other"])
    assert code == 2 and "['study-id'] are not study config keys" in capsys.readouterr().err
    assert not (tmp_path / "state" / "studies" / "s1").exists()  # nothing half-written


def test_a_study_interrupted_too_often_is_marked_failed_not_resubmitted(tmp_path: Path) -> None:
    paths = CoordinatorPaths(tmp_path / "state")
    record = prepare_study(paths, StudyConfig(num_server_rounds=2), "s1")
    write_study(paths, replace(record, status=RUNNING, submissions=MAX_SUBMISSIONS))
    resumer = StudyResumer(paths)
    resumer.resubmit_interrupted()
    assert resumer.children == {}
    assert read_study(paths, "s1").status == FAILED
