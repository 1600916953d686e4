"""Each round's evaluation travels in the next round's train message (``coordinator/folded_evaluation.py``): 2-round
studies through the real ServerApp ``main`` and real sites over the loopback grid. Every round's evaluation is
recorded once, under its round, and is the evaluation of that round's global model; only the last round sends
evaluate messages, and a site whose training failed is asked for its evaluation with one; a refused evaluation costs
the site its evaluation row, never its training; a study resumed at round 2 gets round 1's evaluation and ends with
the results of an uninterrupted run."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from flower_site import deployed_node_config, small_study
from flwr.app import ArrayRecord, Context, Error, Message, MessageType, RecordDict
from loopback_grid import LoopbackGrid
from test_secure_rounds import node_configs

from fedfusion.coordinator.checkpoint import CoordinatorCheckpoint
from fedfusion.coordinator.run_recorder import METRICS_JSON_FILE, MODEL_FILE, SITE_METRICS_FILE
from fedfusion.coordinator.server_app import main
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.privacy.evaluation_log import EvaluationLog
from fedfusion.privacy.ledger import dataset_id
from fedfusion.protocol import EVALUATE_ROUND_KEY, SITE_ERROR_CODE
from fedfusion.site.client_app import app
from fedfusion.site.round_replay import weights_digest
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

ROUNDS = 2
LIMITED_NODE = 100
"""Its policy allows no evaluation: each is refused."""
FAILING_NODE = 101
"""Its round-2 training fails after it has evaluated round 1."""


def failing_app(message: Message, context: Context) -> Message:
    """The real site's ClientApp; the failing node's round-2 train reply is replaced by an error."""
    reply = app(message, context)
    if (context.node_id == FAILING_NODE and message.metadata.message_type == MessageType.TRAIN
            and message.content["config"]["server-round"] == 2):
        return Message(Error(code=SITE_ERROR_CODE, reason="site: RuntimeError"), reply_to=message)
    return reply


def _nodes(cohort: Path, work: Path) -> dict[int, dict[str, str]]:
    sites = read_cohort_index(cohort).sites
    work.mkdir(parents=True, exist_ok=True)
    policy, limited = work / "policy.toml", work / "limited.toml"
    policy.write_text("dp-mandatory = false\nmax-epsilon = inf\nmin-eval-patients = 1\n")
    limited.write_text(policy.read_text() + "max-evaluations-per-study = 0\n")
    return {LIMITED_NODE: deployed_node_config(sites[0], work / "cache", work / "ledger-a", limited),
            FAILING_NODE: deployed_node_config(sites[1], work / "cache", work / "ledger-b", policy)}


def _run(study: StudyConfig, nodes: dict[int, dict[str, str]], results: Path,
         grid_type: type[LoopbackGrid] = LoopbackGrid) -> LoopbackGrid:
    run = StudyRun.of(study, "folded", CoordinatorSettings(results_dir=str(results), round_timeout=60))
    grid = grid_type(failing_app, nodes, run.to_run_config())
    main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run.to_run_config()))
    return grid


def _sent(grid: LoopbackGrid) -> list[tuple[tuple[str, int, int | None], list[int]]]:
    """The messages the coordinator sent, in runs of the same type, round and round asked evaluated first (in the
    instruction's ``evaluate-round``), each with the nodes it went to."""
    sent = [(m.metadata.message_type, m.content["config"]["server-round"], m.content["config"].get(EVALUATE_ROUND_KEY),
             m.metadata.dst_node_id) for m in grid.sent]
    return [(kind, sorted(node for *_, node in run))  # type: ignore[misc]
            for kind, run in itertools.groupby(sent, key=lambda message: message[:3])]


@dataclass(frozen=True)
class Study:
    """A finished study: its config, the sites' node configs, its results folder and the coordinator's grid."""

    config: StudyConfig
    nodes: dict[int, dict[str, str]]
    work: Path
    grid: LoopbackGrid


@pytest.fixture(scope="module")
def uninterrupted(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A 2-round study run from start to end."""
    study = small_study(small_cohort, dp=False, num_server_rounds=ROUNDS, min_sites=1, secure_aggregation="off")
    work = tmp_path_factory.mktemp("uninterrupted")
    nodes = _nodes(small_cohort, work)
    return Study(study, nodes, work, _run(study, nodes, work / "results"))


def test_each_rounds_evaluation_comes_with_the_next_train_message_under_its_own_round(
        small_cohort: Path, uninterrupted: Study) -> None:
    grid, nodes, results = uninterrupted.grid, uninterrupted.nodes, uninterrupted.work / "results"
    both = [LIMITED_NODE, FAILING_NODE]
    assert _sent(grid) == [(("train", 1, None), both), (("train", 2, 1), both),
                           (("evaluate", 1, None), [FAILING_NODE]),  # its train reply failed
                           (("evaluate", 2, None), both)]

    rows = json.loads((results / METRICS_JSON_FILE).read_text())
    assert [(r["round"], r["phase"]) for r in rows["rounds"]] == [
        (server_round, phase) for server_round in range(1, ROUNDS + 1) for phase in ("train", "evaluate")]
    sites = pd.read_csv(results / SITE_METRICS_FILE)
    assert len(sites) == ROUNDS * 2 * 2 and not sites.duplicated(["round", "phase", "site"]).any()
    limited, failing = (nodes[node]["site-name"] for node in both)
    failed = sites[sites["error"] == 1]
    assert sorted(zip(failed["round"], failed["phase"], failed["site"], strict=True)) == [
        (1, "evaluate", limited), (2, "evaluate", limited), (2, "train", failing)]  # limited: trained all the same

    # Each evaluation the sites logged is of its round's global model, and is what the coordinator recorded for it.
    global_after = {m.content["config"]["server-round"] - 1: m.content["arrays"]  # type: ignore[operator]
                    for m in grid.sent if m.metadata.message_type == MessageType.TRAIN}
    global_after[ROUNDS] = ArrayRecord(torch.load(results / MODEL_FILE, weights_only=True))
    digests = {r: weights_digest(arrays.to_torch_state_dict()) for r, arrays in global_after.items()}
    for node, name, evaluated in ((LIMITED_NODE, limited, []), (FAILING_NODE, failing, [1, 2])):
        site = next(s for s in read_cohort_index(small_cohort).sites if s.name == name)
        log = EvaluationLog(Path(nodes[node]["ledger-dir"]), dataset_id(name, site.site_dir)).evaluations()
        assert [e.server_round for e in log] == evaluated, node  # the failing site's round 1 counted once
        for evaluation in log:
            assert evaluation.model_sha256 == digests[evaluation.server_round]
            row = sites[(sites["round"] == evaluation.server_round) & (sites["phase"] == "evaluate")
                        & (sites["site"] == name)].iloc[0]
            assert evaluation.metrics is not None
            for key, value in evaluation.metrics.items():
                assert row[key] == pytest.approx(value, nan_ok=True), (key, evaluation.server_round)
            assert not math.isnan(row["comparable-pairs"])


class StoppedAfterRound1(Exception):
    """The coordinator 'killed' once round 1 is checkpointed (at round 2's first message)."""


class KilledGrid(LoopbackGrid):
    """Stops the coordinator when round 2's first train message is pushed."""

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        messages = list(messages)
        if any(m.content["config"]["server-round"] == 2 for m in messages):
            raise StoppedAfterRound1
        return super().push_messages(messages)


def test_a_study_resumed_at_round_2_gets_round_1s_evaluation_and_the_uninterrupted_results(
        small_cohort: Path, tmp_path: Path, uninterrupted: Study) -> None:
    study, nodes = uninterrupted.config, _nodes(small_cohort, tmp_path)
    with pytest.raises(StoppedAfterRound1):
        _run(study, nodes, tmp_path / "results", KilledGrid)
    checkpoint = CoordinatorCheckpoint(tmp_path / "results", study, "folded").load()
    assert checkpoint is not None and checkpoint.completed_round == 1
    assert [(r["round"], r["phase"]) for r in checkpoint.round_rows] == [(1, "train")]  # round 1's evaluation: next
    grid = _run(study, nodes, tmp_path / "results")
    assert _sent(grid) == _sent(uninterrupted.grid)[1:]

    def table(results: Path) -> pd.DataFrame:
        sites = pd.read_csv(results / SITE_METRICS_FILE)
        return sites.drop(columns=[c for c in sites if c.endswith("seconds")]).sort_values(
            ["round", "phase", "site"], ignore_index=True)

    pd.testing.assert_frame_equal(table(tmp_path / "results"), table(uninterrupted.work / "results"))


def test_secure_distributed_dp_rounds_fold_their_evaluation_too(small_cohort: Path, tmp_path: Path) -> None:
    """Secure aggregation of 3 sites with distributed DP: round 2's train reply carries the site's public keys, its
    training metrics and round 1's evaluation; only the last round sends evaluate messages."""
    study = small_study(small_cohort, num_server_rounds=ROUNDS, min_sites=3, secure_aggregation="on",
                        dp_mode="distributed", sample_rate=0.5, distributed_dp_tolerance=1)
    run = StudyRun.of(study, "secure", CoordinatorSettings(results_dir=str(tmp_path / "results"), round_timeout=60))
    policy = "max-epsilon = inf\nmin-eval-patients = 1\n"
    grid = LoopbackGrid(app, node_configs(small_cohort, tmp_path, "secure", 3, policy), run.to_run_config())
    main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run.to_run_config()))

    nodes = [100, 101, 102]
    assert _sent(grid) == [(("train", 1, None), nodes), (("query.secagg", 1, None), sorted(nodes * 3)),
                           (("train", 2, 1), nodes), (("query.secagg", 2, None), sorted(nodes * 3)),
                           (("evaluate", 2, None), nodes)]
    rows = json.loads((tmp_path / "results" / METRICS_JSON_FILE).read_text())
    assert [(r["round"], r["phase"]) for r in rows["rounds"]] == [
        (server_round, phase) for server_round in range(1, ROUNDS + 1) for phase in ("train", "evaluate")]
    assert all(r["secure-aggregation-sites"] == 3 for r in rows["rounds"] if r["phase"] == "train")
    evaluated = [r for r in rows["sites"] if r["phase"] == "evaluate"]
    assert len(evaluated) == ROUNDS * 3 and all("error" not in r and r["comparable-pairs"] >= 0 for r in evaluated)
