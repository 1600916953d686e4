"""The coordinator's live progress lines say what the operator needs: patients, epsilon, and secure aggregation."""

from fedfusion.coordinator.run_recorder import RunRecorder
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
