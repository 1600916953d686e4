"""The site's privacy policy: parsed strictly, and enforced by the real ClientApp whatever the coordinator asks."""

from __future__ import annotations

from pathlib import Path

import pytest
from flower_site import call_site, deployed_node_config, small_study

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.errors import ConfigError
from fedfusion.privacy.egress_record import EGRESS_FILE, EgressRecord
from fedfusion.privacy.ledger import PrivacyLedger, dataset_id
from fedfusion.privacy.site_policy import SitePolicy, load_policy
from fedfusion.study.config import StudyConfig

POLICIES = {
    "site-a": "min-noise-multiplier = 0.8\nmax-grad-norm = 2.0\ndelta = 1e-5\n",
    "site-b": "min-noise-multiplier = 1.0\nmax-grad-norm = 1.0\ndelta = 1e-6\nmax-epsilon = 3.0\n",
}


def test_policy_file_is_parsed_and_missing_keys_take_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('max-epsilon = 4\naccountant = "rdp"\nallowed-modalities = ["omics", "clinical"]\n')
    policy = load_policy(path)
    assert (policy.max_epsilon, policy.accountant, policy.allowed_modalities) == (4.0, "rdp", ("omics", "clinical"))
    assert (policy.delta, policy.dp_mandatory, policy.source) == (SitePolicy().delta, True, str(path))
    assert load_policy(None) == SitePolicy()


@pytest.mark.parametrize("text, message", [
    ("max-epsilon = 'ten'\n", "'max-epsilon' must be like 50.0"),
    ("dp-mandatory = 1\n", "'dp-mandatory' must be like True"),
    ("max-epsilonn = 3\n", r"unknown keys \['max-epsilonn'\]"),
    ("delta = 2\n", r"'delta' must be in \(0, 1\)"),
    ("allowed-fusions = ['sum']\n", "'allowed-fusions' must name some of"),
    ("max-epsilon = [\n", "not valid TOML"),
    ("min-eval-patients = 2.5\n", "'min-eval-patients' must be like 20"),
    ("max-evaluations-per-round = -1\n", "'max-evaluations-per-round' must be >= 0"),
    ("eval-metric-noise = nan\n", "'eval-metric-noise' must be a finite number >= 0"),
    ("test-fraction = 1.0\n", r"'test-fraction' must be in \(0, 1\)"),
])
def test_bad_policy_files_are_rejected_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"privacy policy {path}: .*{message}"):
        load_policy(path)


def test_violations_name_every_weaker_setting() -> None:
    policy = SitePolicy(min_noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-6, allowed_modalities=("omics",),
                        allowed_fusions=("kronecker",))
    weak = StudyConfig(target_epsilon=0.0, noise_multiplier=0.5, max_grad_norm=2.0, delta=1e-5)
    rules = [v.split("'")[1] for v in policy.violations(weak)]
    assert rules == ["min-noise-multiplier", "max-grad-norm", "delta", "allowed-modalities", "allowed-fusions"]
    assert [v.split("'")[1] for v in SitePolicy().violations(StudyConfig(dp=False))] == ["dp-mandatory"]
    assert SitePolicy(dp_mandatory=False).violations(StudyConfig(dp=False)) == []
    assert SitePolicy().violations(StudyConfig()) == []
    budgeted = StudyConfig(target_epsilon=12.0, noise_multiplier=0.1)  # its noise is the site's calibration
    assert SitePolicy().violations(budgeted) == [
        "rule 'max-target-epsilon' (10.0): study asks target-epsilon = 12.0"]
    assert SitePolicy(max_target_epsilon=12.0).violations(budgeted) == []


@pytest.mark.parametrize("weaker, rule", [
    ({"noise-multiplier": 0.3}, "min-noise-multiplier"),
    ({"max-grad-norm": 5.0}, "max-grad-norm"),
    ({"delta": 1e-3}, "delta"),
    ({"dp": False}, "dp-mandatory"),
    ({"target-epsilon": 12.0}, "max-target-epsilon"),
])
def test_every_site_refuses_a_weaker_privacy_setting(small_cohort: Path, tmp_path: Path, weaker: dict[str, object],
                                                    rule: str) -> None:
    study = StudyConfig.from_run_config({**small_study(small_cohort).to_run_config(), **weaker})
    sites = read_cohort_index(small_cohort).sites
    assert {s.name for s in sites} == set(POLICIES)
    for site in sites:
        policy = tmp_path / f"{site.name}.toml"
        policy.write_text(POLICIES[site.name])
        ledger_dir = tmp_path / f"ledger-{site.name}"
        reply = call_site("train", study, deployed_node_config(site, tmp_path / "cache", ledger_dir,
                                                               policy))
        assert reply.has_error() and reply.error.code == 3002
        assert reply.error.reason.startswith(
            f"site {site.name} refuses the study under its privacy policy: rule '{rule}'")
        assert PrivacyLedger(ledger_dir, dataset_id(site.name, site.site_dir)).rounds() == []
        (recorded,) = EgressRecord(ledger_dir / EGRESS_FILE).entries()
        assert recorded["kind"] == "error" and recorded["error"]["reason"] == reply.error.reason


def test_a_study_within_the_policy_is_served_and_a_modality_outside_it_is_refused(small_cohort: Path,
                                                                                  tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICIES[site.name] + 'allowed-modalities = ["wsi", "omics"]\nmin-eval-patients = 1\n')
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", policy)
    within = small_study(small_cohort, modalities="wsi,omics", noise_multiplier=0.8, max_grad_norm=2.0)
    assert not call_site("evaluate", within, config).has_error()
    refused = call_site("evaluate", small_study(small_cohort, noise_multiplier=0.8, max_grad_norm=2.0), config)
    assert refused.has_error() and "rule 'allowed-modalities'" in refused.error.reason


def test_a_named_policy_file_that_is_missing_is_an_error_not_the_default(small_cohort: Path, tmp_path: Path) -> None:
    site = read_cohort_index(small_cohort).sites[0]
    config = deployed_node_config(site, tmp_path / "cache", tmp_path / "ledger", tmp_path / "nope.toml")
    reply = call_site("train", small_study(small_cohort), config)
    assert reply.has_error() and reply.error.reason == f"site {site.name}: ConfigError (details in the site's log)"
