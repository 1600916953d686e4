"""A whole study with one hostile site: the real ServerApp ``main`` drives two real sites and one whose real replies
are poisoned on the way out (NaN weights, then a huge patient count; a NaN evaluation count), over the loopback grid.
The study finishes, every round aggregates the honest sites, the hostile one is named in the results, and the
checkpoint and final model are finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flower_site import deployed_node_config, small_study
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from loopback_grid import LoopbackGrid

from fedfusion.coordinator.checkpoint import CoordinatorCheckpoint
from fedfusion.coordinator.run_recorder import MODEL_FILE, SITE_METRICS_FILE
from fedfusion.coordinator.server_app import main
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.site.client_app import app
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

HOSTILE_NODE = 102


def poisoned(reply: Message, message: Message) -> Message:
    """The hostile site's reply: round 1 NaN weights, round 2 a count of 10**12, evaluation a NaN count (round 1's
    evaluation travels in round 2's train reply)."""
    if reply.has_error():
        return reply
    metrics = reply.content["metrics"]
    if "evaluation" in reply.content:
        reply.content["evaluation"] = MetricRecord({**reply.content["evaluation"], "num-examples": math.nan})
    if message.metadata.message_type == MessageType.TRAIN:
        if message.content["config"]["server-round"] == 1:
            arrays = reply.content["arrays"]
            reply.content["arrays"] = ArrayRecord({k: Array(np.full_like(v.numpy(), np.nan))
                                                   for k, v in arrays.items()})
        else:
            reply.content["metrics"] = MetricRecord({**metrics, "num-examples": 10**12})
    else:
        reply.content["metrics"] = MetricRecord({**metrics, "num-examples": math.nan})
    return reply


def hostile_app(message: Message, context: Context) -> Message:
    """The real site's ClientApp; on the hostile node its replies are poisoned."""
    reply = app(message, context)
    return poisoned(reply, message) if context.node_id == HOSTILE_NODE else reply


def test_a_study_with_a_hostile_site_finishes_on_the_honest_sites(small_cohort: Path, tmp_path: Path) -> None:
    study = small_study(small_cohort, dp=False, num_server_rounds=2, min_sites=2, secure_aggregation="off")
    policy = tmp_path / "policy.toml"
    policy.write_text("dp-mandatory = false\nmax-epsilon = inf\nmin-eval-patients = 1\n")
    sites = read_cohort_index(small_cohort).sites
    configs = {}
    for index in range(3):
        config = deployed_node_config(sites[index % 2], tmp_path / "cache", tmp_path / f"ledger-{index}", policy)
        config["site-name"] = f"{sites[index % 2].name}-{index}"
        configs[100 + index] = config
    results = tmp_path / "results"
    run = StudyRun.of(study, coordinator=CoordinatorSettings(results_dir=str(results), round_timeout=60))
    grid = LoopbackGrid(hostile_app, configs, run.to_run_config())
    main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                       run_config=run.to_run_config()))

    training = json.loads((results / "training.json").read_text())
    assert training["status"] == "trained" and training["aggregated_rounds"] == [1, 2]
    sites_table = pd.read_csv(results / SITE_METRICS_FILE)
    hostile = f"{sites[0].name}-2"
    rejected = sites_table[sites_table["rejected"] == 1]
    assert sorted(zip(rejected["round"], rejected["phase"], rejected["site"], strict=True)) == [
        (1, "evaluate", hostile), (1, "train", hostile), (2, "evaluate", hostile), (2, "train", hostile)]
    rounds = pd.read_csv(results / "round_metrics.csv")
    assert list(rounds["rejected-replies"]) == [1, 1, 1, 1]
    final = torch.load(results / MODEL_FILE, weights_only=True)
    assert all(torch.isfinite(t.float()).all() for t in final.values())
    checkpoint = CoordinatorCheckpoint(results, study, run.study_id).load()
    assert checkpoint is not None and checkpoint.completed_round == 2
    assert all(torch.isfinite(t.float()).all() for t in checkpoint.weights.values())
    initial = {k: v.numpy() for k, v in grid.sent[0].content["arrays"].items()}
    assert any(not np.array_equal(checkpoint.weights[k].numpy(), initial[k]) for k in initial)  # it did train
