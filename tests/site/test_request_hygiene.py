"""A request with a non-finite or out-of-range DP parameter or round number is refused before anything is charged:
through the real ClientApp, each refusal a fixed reason naming the site and the rule, the ledger untouched."""

from __future__ import annotations

from pathlib import Path

from flower_site import deployed_node_config, instruction, site_context, small_study
from flwr.app import ConfigRecord

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.evaluation_log import EvaluationLog
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.protocol import SITE_REFUSAL_CODE
from fedfusion.site.client_app import app
from fedfusion.site.site_round import SERVER_ROUND_RULE

NAN, INF = float("nan"), float("inf")
BAD_STUDIES = [
    ("max-grad-norm", NAN, "study config with dp = true needs 'noise-multiplier' and 'max-grad-norm' finite and > 0, "
                           "got 1.0 and nan"),
    ("noise-multiplier", NAN, "study config with dp = true needs 'noise-multiplier' and 'max-grad-norm' finite and > 0,"
                              " got nan and 1.0"),
    ("noise-multiplier", INF, "study config with dp = true needs 'noise-multiplier' and 'max-grad-norm' finite and > 0,"
                              " got inf and 1.0"),
    ("delta", NAN, "study config 'delta' must be in (0, 1), got nan"),
    ("target-epsilon", NAN, "study config 'target-epsilon' must be a finite number >= 0 (0 = off), got nan"),
    ("sample-rate", NAN, "study config 'sample-rate' must be in (0, 1], got nan"),
    ("learning-rate", INF, "study config 'learning-rate' must be a finite number > 0, got inf"),
    ("learning-rate", -0.1, "study config 'learning-rate' must be a finite number > 0, got -0.1"),
    ("local-epochs", 0, "study config 'local-epochs' must be > 0, got 0"),
    ("local-epochs", 1.5, "study config 'local-epochs': not an integer: 1.5"),
]


def test_bad_dp_parameters_and_round_numbers_are_refused_naming_the_rule_and_nothing_is_charged(
        small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    study = small_study(small_cohort)
    node_config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger")
    expected: list[str] = []
    for kind in ("train", "evaluate"):
        for key, value, problem in BAD_STUDIES:
            context = site_context(study, node_config)
            context.run_config[key] = value
            reply = app(instruction(kind, study, 1), context)
            assert reply.has_error() and reply.error.code == SITE_REFUSAL_CODE, (key, value)
            assert reply.error.reason == f"site {site.name} refuses the study: rule 'valid-study-config': {problem}"
            expected.append(reply.error.reason)
        for server_round in (-1, 0, "1", 1.0):
            message = instruction(kind, study, 1)
            message.content.config_records["config"] = ConfigRecord({"server-round": server_round})
            reply = app(message, site_context(study, node_config))
            assert reply.has_error() and reply.error.code == SITE_REFUSAL_CODE, server_round
            assert reply.error.reason == f"site {site.name} refuses the request: {SERVER_ROUND_RULE}"
            expected.append(reply.error.reason)
    dataset = dataset_id(site.name, site.site_dir)
    assert PrivacyLedger(tmp_path / "ledger", dataset).rounds() == []
    assert not PrivacyLedger(tmp_path / "ledger", dataset).path.exists()
    assert EvaluationLog(tmp_path / "ledger", dataset).evaluations() == []
    assert [e["error"]["reason"] for e in EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries()] == expected
