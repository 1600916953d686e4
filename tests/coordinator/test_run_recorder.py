"""The coordinator's live progress lines say what the operator needs: patients, epsilon, and secure aggregation."""

import json
from pathlib import Path

import pandas as pd
import torch

from fedfusion.coordinator.run_recorder import (
    MODEL_FILE,
    PERSONALIZATION_FILE,
    SITE_METRICS_FILE,
    TRAINING_FILE,
    RunRecorder,
    TrainingOutcome,
)
from fedfusion.coordinator.strategies.patient_weighted_fedavg import SiteReply
from fedfusion.study.config import StudyConfig


def test_train_line_shows_patients_epsilon_and_how_many_sites_were_securely_aggregated() -> None:
    lines: list[str] = []
    recorder = RunRecorder(StudyConfig(num_server_rounds=4), emit=lines.append)
    recorder.round_aggregated(2, "train", {"patients": 413.0, "epsilon": 4.7512, "train-loss": 1.9,
                                           "secure-aggregation-sites": 3.0})
    recorder.round_aggregated(3, "train", {"patients": 413.0, "epsilon": 5.0, "train-loss": 1.8})
    assert lines[0] == ("[round 2/4] train    federation patients=413  eps=4.751  loss=1.900  "
                        "secure-aggregation sites=3")
    assert "secure-aggregation" not in lines[1]  # a plain round says nothing of it
    assert [row["round"] for row in recorder.round_rows] == [2, 3]


def test_a_round_not_aggregated_says_so() -> None:
    lines: list[str] = []
    recorder = RunRecorder(StudyConfig(num_server_rounds=4), emit=lines.append)
    recorder.round_aggregated(1, "train", {"not-aggregated": 1.0})
    assert lines == ["[round 1/4] train    federation NOT AGGREGATED: the global model stays as it was "
                     "(reason in the warning above)"]


def _recorder(lines: list[str], rounds: int = 3) -> RunRecorder:
    return RunRecorder(StudyConfig(num_server_rounds=rounds), emit=lines.append)


def test_a_study_where_no_round_aggregated_is_not_trained_and_shows_no_c_index(tmp_path: Path) -> None:
    lines: list[str] = []
    recorder = _recorder(lines, rounds=2)
    for server_round in (1, 2):
        recorder.round_aggregated(server_round, "train", {"not-aggregated": 1.0})
        recorder.site_reply(SiteReply(server_round, "evaluate", "site-a", {"patients": 5.0, "c-index": 0.61}))
        recorder.round_aggregated(server_round, "evaluate", {"patients": 5.0, "c-index": 0.61})
    assert not any("C-index" in line for line in lines)
    (tmp_path / MODEL_FILE).write_bytes(b"stale")
    outcome = recorder.write(tmp_path, final_weights={"w": torch.zeros(1)})
    assert (outcome.trained, outcome.status) == (False, "not trained")
    assert outcome.describe().startswith("NOT TRAINED: none of the 2 rounds aggregated")
    assert not (tmp_path / MODEL_FILE).exists()
    saved = json.loads((tmp_path / TRAINING_FILE).read_text())
    assert saved["status"] == "not trained" and saved["aggregated_rounds"] == []
    assert TrainingOutcome.read(tmp_path) == outcome


def test_a_study_whose_last_rounds_did_not_aggregate_says_how_many_did(tmp_path: Path) -> None:
    lines: list[str] = []
    recorder = _recorder(lines)
    recorder.round_aggregated(1, "train", {"patients": 9.0, "epsilon": 1.0})
    recorder.round_aggregated(1, "evaluate", {"patients": 5.0, "c-index": 0.61})
    for server_round in (2, 3):
        recorder.round_aggregated(server_round, "train", {"not-aggregated": 1.0})
    assert "C-index=0.610" in lines[1]
    outcome = recorder.write(tmp_path, final_weights={"w": torch.zeros(1)})
    assert outcome.status == "partly trained" and outcome.aggregated_rounds == (1,)
    assert outcome.describe() == ("partly trained: 1 of 3 rounds aggregated (not aggregated: 2, 3); the final model "
                                  "is the global model after round 1")
    assert (tmp_path / MODEL_FILE).is_file()
    assert TrainingOutcome.from_rows(3, recorder.round_rows[:2]).status == "trained"


def test_personalized_metrics_are_shown_and_written_per_site_beside_the_global_ones(tmp_path: Path) -> None:
    lines: list[str] = []
    recorder = _recorder(lines, rounds=1)
    recorder.round_aggregated(1, "train", {"patients": 9.0, "epsilon": 1.0})
    recorder.site_reply(SiteReply(1, "evaluate", "site-a", {"num-examples": 5.0, "c-index": 0.61,
                                                            "personalized-c-index": 0.66, "personalized-loss": 1.2,
                                                            "loss": 1.3, "personalized-td-auc": 0.7}))
    recorder.site_reply(SiteReply(1, "evaluate", "site-b", {"num-examples": 4.0, "c-index": 0.58,
                                                            "personalization-refused": 1.0}))
    assert lines[-2].endswith("C-index=0.610  personalized C-index=0.660")
    assert lines[-1].endswith("C-index=0.580  personalization refused=1")
    recorder.write(tmp_path, final_weights={"w": torch.zeros(1)})
    table = pd.read_csv(tmp_path / PERSONALIZATION_FILE)
    assert list(table["site"]) == ["site-a", "site-b"]
    assert table.loc[0, ["c-index", "personalized-c-index", "loss", "personalized-loss"]].tolist() == [
        0.61, 0.66, 1.3, 1.2]
    assert table.loc[1, "personalization-refused"] == 1.0 and pd.isna(table.loc[1, "personalized-c-index"])
    assert "personalized-c-index" in pd.read_csv(tmp_path / SITE_METRICS_FILE).columns


def test_no_personalization_file_without_personalized_metrics(tmp_path: Path) -> None:
    recorder = _recorder([], rounds=1)
    recorder.round_aggregated(1, "train", {"patients": 9.0, "epsilon": 1.0})
    recorder.site_reply(SiteReply(1, "evaluate", "site-a", {"num-examples": 5.0, "c-index": 0.61}))
    (tmp_path / PERSONALIZATION_FILE).write_text("stale")
    recorder.write(tmp_path, final_weights={"w": torch.zeros(1)})
    assert not (tmp_path / PERSONALIZATION_FILE).exists()
