"""A site whose slide features were not prepared refuses the round, through the real ClientApp, with a public
reason that names the fix but no path; nothing is charged, and once the admin prepares the site it trains."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flower_site import call_site, deployed_node_config, prepare_site, small_study

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.protocol import SITE_REFUSAL_CODE
from fedfusion.site.site_round import PREPARED_FEATURES_RULE


def test_a_round_without_prepared_features_is_refused_naming_the_fix_and_no_path(
        small_cohort: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = read_cohort_index(small_cohort).sites[1]
    study = small_study(small_cohort)
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", prepared=False)
    with caplog.at_level(logging.WARNING):
        train = call_site("train", study, config, server_round=1)
        evaluate = call_site("evaluate", study, config, server_round=1)
    for reply, request in ((train, "round 1"), (evaluate, "evaluation of round 1")):
        assert reply.has_error() and reply.error.code == SITE_REFUSAL_CODE
        assert reply.error.reason == f"site {site.name} refuses {request}: {PREPARED_FEATURES_RULE}"
        assert "features not prepared: run fedfusion site prepare" in reply.error.reason
        assert str(tmp_path) not in reply.error.reason and "/" not in reply.error.reason
    recorded = [e["error"]["reason"] for e in EgressRecord(tmp_path / "ledger" / EGRESS_FILE).entries()]
    assert recorded == [train.error.reason, evaluate.error.reason]  # what left is what was recorded
    ledger = PrivacyLedger(tmp_path / "ledger", dataset_id(site.name, site.site_dir))
    assert ledger.rounds() == [], "a refused round must charge nothing"
    # The site's log holds the detail: how many slides, one of them, and the exact command with the cache folder.
    assert (f"run fedfusion site prepare {site.site_dir} --cache-dir {tmp_path / 'cache' / site.name}"
            in caplog.text)

    prepare_site(site, tmp_path / "cache" / site.name)  # the admin runs the command
    assert not call_site("train", study, config, server_round=1).has_error()
    assert len(ledger.rounds()) == 1
