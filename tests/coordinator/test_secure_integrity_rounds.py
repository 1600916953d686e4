"""Secure aggregation under a hostile site on Flower's Message API: the real strategy drives the real site
ClientApp over the loopback grid, and the hostile site's replies are rewritten before they go on the wire.

Each attack of issue 12 (an inflated weight, a masked input replayed from the previous round, a tampered share, a
malformed stage message) is detected, the site is named in the coordinator's log and dropped like a dropout, and
the round's aggregate equals plain FedAvg of the other sites (training without DP is deterministic), or for the
replay, the same two rounds with that site dropping out of round 2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flower_site import small_study
from flwr.app import Array, ArrayRecord, Message
from flwr.serverapp.strategy import Result
from loopback_grid import LoopbackGrid
from test_secure_rounds import error_bound, max_error, node_configs

from fedfusion.coordinator.reply_validation import ReplyLimits
from fedfusion.coordinator.strategies.secure_fedavg import SecurePatientWeightedFedAvg
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.models.fusion_model import build_model
from fedfusion.protocol import CONFIG_RECORD, MASKED_RECORD, SECAGG_RECORD, SERVER_ROUND_KEY
from fedfusion.secure_aggregation.wire_records import stage_of
from fedfusion.site.client_app import app
from fedfusion.study.config import StudyConfig

HOSTILE = 103
"""The hostile site's node among nodes 100..104 (site id 4 of the round)."""
HONEST = [100, 101, 102, 104]
Rewrite = Callable[[Message, Message], None]


def run(study: StudyConfig, configs: dict[int, dict[str, str]], mode: str, rounds: int = 1,
        alter: Rewrite = lambda _m, _r: None,
        drop: Callable[[Message], bool] = lambda _: False) -> Result:
    grid = LoopbackGrid(app, configs, study.to_run_config(), drop=drop, alter=alter)
    strategy = SecurePatientWeightedFedAvg(min_sites=3, secure_aggregation=mode,
                                           threshold_fraction=study.secure_aggregation_threshold,
                                           reply_limits=ReplyLimits.of(study))
    initial = ArrayRecord(build_model(study, seed=study.training_seed).state_dict())
    return strategy.start(grid, initial, num_rounds=rounds, timeout=60)


def hostile_reply(stage: str, rewrite: Callable[[Message], None]) -> Rewrite:
    """Rewrite the hostile node's reply of ``stage`` with ``rewrite``."""

    def alter(message: Message, reply: Message) -> None:
        if message.metadata.dst_node_id == HOSTILE and not reply.has_error() and stage_of(reply.content) == stage:
            rewrite(reply)

    return alter


@pytest.fixture
def coordinator_log() -> Iterator[list[str]]:
    """The coordinator's warnings (Flower's ``flwr`` logger) during the test."""
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    FLOWER_LOGGER.addHandler(handler)
    yield lines
    FLOWER_LOGGER.removeHandler(handler)


@pytest.fixture(scope="module")
def honest_fedavg(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """Plain FedAvg of the four honest sites: the reference every attacked secure round must match."""
    work = tmp_path_factory.mktemp("honest")
    configs = node_configs(small_cohort, work, "plain", 5)
    return run(small_study(small_cohort, dp=False), {n: configs[n] for n in HONEST}, "off")


def dropped(log: list[str], reason: str) -> list[str]:
    return [line for line in log if f"(node {HOSTILE}) dropped: it " in line and reason in line]


def test_inflated_weight_is_dropped_and_named(small_cohort: Path, tmp_path: Path, honest_fedavg: Result,
                                              coordinator_log: list[str]) -> None:
    def inflate(reply: Message) -> None:
        reply.content[SECAGG_RECORD]["weight"] = 10**12

    study = small_study(small_cohort, dp=False)
    configs = node_configs(small_cohort, tmp_path, "inflated", 5)
    result = run(study, configs, "on", alter=hostile_reply("keys", inflate))
    error = max_error(result, honest_fedavg)
    print(f"weight 1e12 from one of 5 sites: max |secure - plain FedAvg of the other 4| = {error:.3g}")
    assert error <= error_bound(5)
    metrics = result.train_metrics_clientapp[1]
    assert metrics["secure-aggregation-sites"] == 4 and metrics["secure-aggregation-rejected"] == 1
    assert metrics["patients"] == honest_fedavg.train_metrics_clientapp[1]["patients"]
    name = configs[HOSTILE]["site-name"]
    assert dropped(coordinator_log, "announced weight 1000000000000, not an integer in [1, 100000]")[0].startswith(
        f"secure aggregation, round 1: site {name} (node {HOSTILE})")


def tamper_share(reply: Message) -> None:
    """Flip one byte of the share bundle the hostile site deals to the round's first site."""
    ciphertexts = list(reply.content[SECAGG_RECORD]["ciphertexts"])  # type: ignore[arg-type]
    first = bytearray(ciphertexts[0])
    first[len(first) // 2] ^= 0x01
    reply.content[SECAGG_RECORD]["ciphertexts"] = [bytes(first), *ciphertexts[1:]]


def share_with_one_site(reply: Message) -> None:
    record = reply.content[SECAGG_RECORD]
    record["recipients"] = list(record["recipients"])[:1]  # type: ignore[arg-type]
    record["ciphertexts"] = list(record["ciphertexts"])[:1]  # type: ignore[arg-type]


def words_out_of_range(reply: Message) -> None:
    vector = reply.content.array_records[MASKED_RECORD]["vector"].numpy()
    reply.content[MASKED_RECORD] = ArrayRecord({"vector": Array(vector.astype(np.uint64) + 2**32)})


def unreadable_layout(reply: Message) -> None:
    reply.content[SECAGG_RECORD]["layout"] = "[not json"


@pytest.mark.parametrize("stage, rewrite, reason", [
    ("share-keys", tamper_share, "dealt site 1 a share that did not decrypt or verify"),
    ("share-keys", share_with_one_site, "did not share with exactly the other sites that announced keys"),
    ("masked-input", words_out_of_range, "not one vector of uint32 words"),
    ("masked-input", unreadable_layout, "unreadable"),
], ids=["tampered-share", "shares-with-one-site", "words-out-of-range", "unreadable-stage-message"])
def test_tampered_or_malformed_stage_answer_drops_that_site_not_the_round(
        small_cohort: Path, tmp_path: Path, honest_fedavg: Result, coordinator_log: list[str], stage: str,
        rewrite: Callable[[Message], None], reason: str) -> None:
    study = small_study(small_cohort, dp=False)
    result = run(study, node_configs(small_cohort, tmp_path, "hostile", 5), "on", alter=hostile_reply(stage, rewrite))
    error = max_error(result, honest_fedavg)
    print(f"{reason}: max |secure - plain FedAvg of the other 4| = {error:.3g}")
    assert error <= error_bound(5)
    assert result.train_metrics_clientapp[1]["secure-aggregation-sites"] == 4
    assert any(f"node {HOSTILE}" in line and reason in line for line in coordinator_log), coordinator_log


def test_masked_input_replayed_from_the_previous_round_is_named_and_dropped(
        small_cohort: Path, tmp_path: Path, coordinator_log: list[str]) -> None:
    study = small_study(small_cohort, dp=False)
    kept: dict[int, Message] = {}

    def replay(message: Message, reply: Message) -> None:
        if message.metadata.dst_node_id != HOSTILE or stage_of(reply.content) != "masked-input":
            return
        server_round = int(message.content[CONFIG_RECORD][SERVER_ROUND_KEY])  # type: ignore[arg-type]
        kept[server_round] = reply
        if server_round == 2:  # the round-1 reply's records, sent again
            reply.content[SECAGG_RECORD] = kept[1].content[SECAGG_RECORD]
            reply.content[MASKED_RECORD] = kept[1].content[MASKED_RECORD]

    configs = node_configs(small_cohort, tmp_path, "replay", 5)
    secure = run(study, configs, "on", rounds=2, alter=replay)
    assert sorted(kept) == [1, 2]

    def round_two_without_the_hostile_site(message: Message) -> bool:
        return (message.metadata.dst_node_id == HOSTILE and stage_of(message.content) == "masked-input"
                and int(message.content[CONFIG_RECORD][SERVER_ROUND_KEY]) == 2)  # type: ignore[arg-type]

    # The reference: the same study with the hostile site dropping out of round 2 before its masked input
    # (which the secure tests above show equals plain FedAvg of the others). Masks cancel exactly and training
    # without DP is deterministic, so the two agree to the last bit unless the replay leaked into the sum.
    reference = run(study, {n: {**c, "ledger-dir": c["ledger-dir"] + "-ref"} for n, c in configs.items()}, "on",
                    rounds=2, drop=round_two_without_the_hostile_site)
    error = max_error(secure, reference)
    print(f"masked input of round 1 replayed in round 2: max |secure - the same without it| = {error:.3g}")
    assert error <= error_bound(5)
    assert secure.train_metrics_clientapp[1]["secure-aggregation-sites"] == 5
    assert secure.train_metrics_clientapp[2]["secure-aggregation-sites"] == 4
    assert secure.train_metrics_clientapp[2]["secure-aggregation-rejected"] == 1
    assert reference.train_metrics_clientapp[2]["secure-aggregation-rejected"] == 0
    assert dropped(coordinator_log, "sent a masked input not signed for this round (replayed from another round")
