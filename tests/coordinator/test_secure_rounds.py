"""Secure aggregation on Flower's Message API: the real strategy drives the real site ClientApp over a loopback grid.

Every message crosses Flower's protobuf wire format and each node keeps its ``context.state``, as on a SuperNode
(``loopback_grid``). Training without DP is deterministic, so a plain FedAvg round of the same sites is the
reference for the secure round's aggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flower_site import call_site, deployed_node_config, small_study
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp.strategy import Result
from loopback_grid import LoopbackGrid

from fedfusion.coordinator.secure_stages import MESSAGE_TYPE
from fedfusion.coordinator.strategies.secure_fedavg import SecurePatientWeightedFedAvg, secagg_threshold
from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.protocol import SECAGG_RECORD, SITE_REFUSAL_CODE
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.messages import UnmaskRequest
from fedfusion.secure_aggregation.wire_records import stage_of, unmask_request
from fedfusion.site.client_app import app
from fedfusion.study.config import StudyConfig

DEFAULT_CLIPPING_RANGE = SecAggConfig(num_sites=3, threshold=2).clipping_range
FLOAT32_SLACK = 1e-6
"""The plain average is computed in float32 (Flower's FedAvg), the secure one in float64 then cast to float32."""


def error_bound(num_sites: int) -> float:
    """Half a quantization step per site, times at most 2 for the weight the dropouts took away (these cohorts),
    plus float32 rounding."""
    return num_sites * SecAggConfig(num_sites=num_sites, threshold=num_sites).step + FLOAT32_SLACK
NO_DP_POLICY = "dp-mandatory = false\nmax-epsilon = inf\nmin-eval-patients = 1\n"  # small cohorts: 2-5 held out


def node_configs(cohort: Path, work: Path, tag: str, count: int,
                 policy: str = NO_DP_POLICY) -> dict[int, dict[str, str]]:
    """``count`` site nodes (ids 100, 101, ...) over the cohort's sites, each with its own name and ledger."""
    sites = read_cohort_index(cohort).sites
    policy_file = work / f"policy-{tag}.toml"
    policy_file.write_text(policy)
    configs = {}
    for index in range(count):
        site = sites[index % len(sites)]
        config = deployed_node_config(site, work / "cache", work / f"ledger-{tag}-{index}", policy_file)
        config["site-name"] = f"{site.name}-{index}"
        configs[100 + index] = config
    return configs


def run_round(study: StudyConfig, configs: dict[int, dict[str, str]], mode: str,
              drop: Callable[[Message], bool] = lambda _: False) -> tuple[Result, LoopbackGrid]:
    """One round of the real strategy over the loopback grid."""
    grid = LoopbackGrid(app, configs, study.to_run_config(), drop=drop)
    strategy = SecurePatientWeightedFedAvg(min_sites=len(configs), secure_aggregation=mode,
                                           threshold_fraction=study.secure_aggregation_threshold)
    initial = ArrayRecord(build_model(study, seed=study.training_seed).state_dict())
    return strategy.start(grid, initial, num_rounds=1, timeout=60), grid


def max_error(result: Result, reference: Result) -> float:
    assert result.arrays is not None and reference.arrays is not None
    assert list(result.arrays) == list(reference.arrays)
    return max(float(np.max(np.abs(result.arrays[k].numpy().astype(np.float64) - reference.arrays[k].numpy())))
               for k in reference.arrays)


def drop_at(stages: dict[int, str]) -> Callable[[Message], bool]:
    """Drop the messages of the given stage to the given node (and all its later ones)."""
    order = ["share-keys", "masked-input", "unmask"]

    def drop(message: Message) -> bool:
        stage = stage_of(message.content)
        node = message.metadata.dst_node_id
        return node in stages and stage in order and order.index(stage) >= order.index(stages[node])

    return drop


def coordinator_view(grid: LoopbackGrid) -> list[Message]:
    """Every reply the coordinator received, rebuilt from its bytes."""
    return [message_from_proto(ProtoMessage.FromString(payload)) for payload in grid.received]


def test_three_sites_secure_round_equals_plain_fedavg_and_coordinator_sees_only_masked_vectors(
        small_cohort: Path, tmp_path: Path) -> None:
    study = small_study(small_cohort, dp=False)
    plain, _ = run_round(study, node_configs(small_cohort, tmp_path, "plain", 3), "off")
    configs = node_configs(small_cohort, tmp_path, "secure", 3)
    secure, grid = run_round(study, configs, "auto")
    error = max_error(secure, plain)
    print(f"3 sites: max |secure - plain FedAvg| = {error:.3g} (bound {error_bound(3):.3g})")
    assert error <= error_bound(3)
    assert secure.train_metrics_clientapp[1]["secure-aggregation-sites"] == 3
    assert secure.train_metrics_clientapp[1]["patients"] == plain.train_metrics_clientapp[1]["patients"]

    model_size = sum(a.numpy().size for a in plain.arrays.values())  # type: ignore[union-attr]
    view = coordinator_view(grid)
    stages = [stage_of(m.content) for m in view if m.metadata.message_type != "evaluate"]
    assert sorted(stages) == sorted(["keys", "share-keys", "masked-input", "unmask"] * 3)
    for message in view:
        assert not message.has_error()
        arrays = {f"{r}/{k}": a.numpy()
                  for r, record in message.content.array_records.items() for k, a in record.items()}
        if stage_of(message.content) == "masked-input":
            (vector,) = arrays.values()
            assert list(arrays) == ["masked/vector"] and vector.dtype == np.uint32 and vector.size == model_size
            # Unmasked, a site's levels sit near R/2 = 2**31 / 3; masked, they spread uniformly over 2**32.
            assert 0.2 < np.mean(vector < np.uint32(2**30)) < 0.3 and 0.2 < np.mean(vector > np.uint32(3 * 2**30)) < 0.3
        else:
            assert arrays == {}, f"a {message.metadata.message_type} reply carries arrays"
    for node, config in configs.items():
        assert len(grid.contexts[node].state) == 0, "secrets kept after the round"
        entries = EgressRecord(Path(config["ledger-dir"]) / EGRESS_FILE).entries()
        secure_entries = [e for e in entries if e["kind"] in ("train", "query")]
        assert len(secure_entries) == 4 and all(e["secure-aggregation"] for e in secure_entries)
        assert [e["arrays"] for e in secure_entries if e["kind"] == "train"] == [[]]
        assert not any(e["secure-aggregation"] for e in entries if e["kind"] == "evaluate")

    # A replayed unmask request is refused: the site forgot the round.
    replay = Message(RecordDict({SECAGG_RECORD: unmask_request(UnmaskRequest((1, 2, 3), ())),
                                 "config": ConfigRecord({"server-round": 1})}),
                     dst_node_id=100, message_type=MESSAGE_TYPE)
    (answer,) = grid.send_and_receive([replay])
    assert answer.has_error() and answer.error.code == SITE_REFUSAL_CODE
    assert "no secure-aggregation round 1 in progress" in answer.error.reason


@pytest.mark.parametrize("stages, survivors", [
    ({102: "masked-input"}, [100, 101, 103, 104]),
    ({100: "share-keys", 103: "masked-input"}, [101, 102, 104]),
], ids=["one-drops-after-sharing-keys", "down-to-the-threshold"])
def test_five_sites_with_dropouts_equal_plain_fedavg_of_the_survivors(
        small_cohort: Path, tmp_path: Path, stages: dict[int, str], survivors: list[int]) -> None:
    study = small_study(small_cohort, dp=False)
    assert secagg_threshold(5, study.secure_aggregation_threshold) == 3
    configs = node_configs(small_cohort, tmp_path, "secure", 5)
    secure, _ = run_round(study, configs, "on", drop=drop_at(stages))
    plain, _ = run_round(study, {n: {**c, "ledger-dir": c["ledger-dir"] + "-plain"} for n, c in configs.items()
                                 if n in survivors}, "off")
    error = max_error(secure, plain)
    print(f"5 sites, dropouts {stages}: max |secure - plain FedAvg of survivors| = {error:.3g}")
    assert error <= error_bound(5)
    assert secure.train_metrics_clientapp[1]["secure-aggregation-sites"] == len(survivors)


def test_threshold_not_met_fails_safely_and_nothing_is_unmasked(small_cohort: Path, tmp_path: Path) -> None:
    study = small_study(small_cohort, dp=False)
    configs = node_configs(small_cohort, tmp_path, "secure", 5)
    result, grid = run_round(study, configs, "on", drop=drop_at({100: "masked-input", 101: "masked-input",
                                                                 102: "masked-input"}))
    assert len(result.arrays) == 0 and 1 not in result.train_metrics_clientapp  # no new global model: it stays
    sent_stages = [stage_of(m.content) for m in grid.sent]
    assert "masked-input" in sent_stages and "unmask" not in sent_stages
    assert not any(stage_of(m.content) == "unmask" for m in coordinator_view(grid))


def test_policy_secure_aggregation_mandatory_refuses_plain_rounds(small_cohort: Path, tmp_path: Path) -> None:
    study = small_study(small_cohort, dp=False)
    policy = NO_DP_POLICY + "secure-aggregation-mandatory = true\n"
    configs = node_configs(small_cohort, tmp_path, "strict", 2, policy)
    refused = call_site("train", study.replace(secure_aggregation="off"), configs[100])
    assert refused.has_error() and refused.error.code == SITE_REFUSAL_CODE
    assert "rule 'secure-aggregation-mandatory' (true): study asks secure-aggregation = off" in refused.error.reason

    result, grid = run_round(study, configs, "auto")  # 2 sites: "auto" aggregates in plain
    assert len(result.arrays) == 0
    train_replies = [m for m in coordinator_view(grid) if m.metadata.message_type == "train"]
    assert len(train_replies) == 2 and all(m.has_error() for m in train_replies)
    assert all("the coordinator asks plain aggregation" in m.error.reason for m in train_replies)

    secure, _ = run_round(study, node_configs(small_cohort, tmp_path, "strict-on", 2, policy), "on")
    assert len(secure.arrays) > 0 and secure.train_metrics_clientapp[1]["secure-aggregation-sites"] == 2


def test_secure_aggregation_composes_with_dp_sgd(small_cohort: Path, tmp_path: Path) -> None:
    study = small_study(small_cohort)  # DP-SGD on
    configs = node_configs(small_cohort, tmp_path, "dp", 3)
    result, _ = run_round(study, configs, "auto")
    metrics = result.train_metrics_clientapp[1]
    assert metrics["secure-aggregation-sites"] == 3 and metrics["epsilon"] > 0 and len(result.arrays) > 0
    for config in configs.values():
        ledger = PrivacyLedger(Path(config["ledger-dir"]), dataset_id(config["site-name"], Path(config["data-dir"])))
        assert [r.server_round for r in ledger.rounds()] == [1]


def test_updates_near_and_beyond_the_clipping_range_with_weights(small_cohort: Path, tmp_path: Path) -> None:
    """A large learning rate pushes part of each update past the clipping range: those values count as its end."""
    study = small_study(small_cohort, dp=False, learning_rate=4.0)
    initial = {k: v.numpy().astype(np.float64)
               for k, v in build_model(study, seed=study.training_seed).state_dict().items()}
    alone = node_configs(small_cohort, tmp_path, "alone", 3)
    # each site's weights
    trained = {node: run_round(study, {node: config}, "off")[0] for node, config in alone.items()}
    weights = {node: result.train_metrics_clientapp[1]["patients"] for node, result in trained.items()}
    deltas = {node: {k: result.arrays[k].numpy() - initial[k] for k in initial} for node, result in trained.items()}
    clip = DEFAULT_CLIPPING_RANGE
    beyond = np.mean([np.mean(np.abs(d) > clip) for update in deltas.values() for d in update.values()])
    near = np.mean([np.mean((np.abs(d) > 0.8 * clip) & (np.abs(d) <= clip))
                    for u in deltas.values() for d in u.values()])
    assert 0.01 < beyond < 0.9 and near > 0.01, (beyond, near)

    secure, _ = run_round(study, node_configs(small_cohort, tmp_path, "clip", 3), "on")
    total = sum(weights.values())
    expected = {k: initial[k] + sum(weights[n] * np.clip(deltas[n][k], -clip, clip) for n in deltas) / total
                for k in initial}
    error = max(float(np.max(np.abs(secure.arrays[k].numpy() - expected[k]))) for k in initial)
    print(f"updates {beyond:.0%} beyond the clipping range: max |secure - clipped weighted average| = {error:.3g}")
    assert error <= error_bound(3) + 1e-6  # float32 rounding of values up to ~10
