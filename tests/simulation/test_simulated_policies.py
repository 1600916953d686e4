"""In a simulation the researcher plays every site's admin: a simulated site's privacy policy follows the study,
unless the site folder has its own."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from fedfusion.data.cohort_index import CohortSite, find_sites
from fedfusion.data.patient_split import PatientSplit
from fedfusion.privacy.site_policy import POLICY_FILE_NAME, SitePolicy, load_policy, policy_to_toml
from fedfusion.simulation.simulated_nodes import (
    NON_DP_NOTE,
    simulated_node_configs,
    simulated_nodes,
    simulated_site_policy,
    site_split,
    write_site_policies,
)
from fedfusion.site.node_context import resolve_site_context
from fedfusion.site.site_privacy import load_site_policy
from fedfusion.study.config import StudyConfig


def _same_rules(a: SitePolicy, b: SitePolicy) -> bool:
    return dataclasses.replace(a, source="") == dataclasses.replace(b, source="")


@pytest.mark.parametrize("policy", [SitePolicy(), SitePolicy(max_epsilon=math.inf, dp_mandatory=False, delta=1e-6,
                                                             allowed_modalities=("wsi",), accountant="rdp")])
def test_a_policy_written_as_toml_reads_back_the_same(policy: SitePolicy, tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(policy_to_toml(policy))
    assert _same_rules(load_policy(tmp_path / "p.toml"), policy)


def test_a_non_dp_study_is_accepted_by_the_simulated_policy_and_refused_by_the_default() -> None:
    study = StudyConfig(dp=False)
    assert SitePolicy().violations(study)  # a real site's default refuses it
    policy = simulated_site_policy(study)
    assert not policy.violations(study)
    assert (policy.dp_mandatory, policy.max_epsilon) == (False, math.inf)


def test_a_dp_study_keeps_the_default_budget_and_relaxes_only_what_the_study_asks() -> None:
    assert _same_rules(simulated_site_policy(StudyConfig()), dataclasses.replace(SitePolicy(), min_eval_patients=1))
    study = StudyConfig(noise_multiplier=0.3, max_grad_norm=20.0)
    policy = simulated_site_policy(study)
    assert not policy.violations(study) and policy.max_epsilon == SitePolicy().max_epsilon and policy.dp_mandatory


def test_policies_are_written_per_site_and_named_in_node_config_but_a_site_folder_policy_wins(
    small_cohort: Path, tmp_path: Path,
) -> None:
    sites = find_sites(small_cohort)
    own_site = CohortSite(sites[1].name, tmp_path / "own-site")  # a copy of site 1 with its own policy
    own_site.site_dir.mkdir()
    (own_site.site_dir / POLICY_FILE_NAME).write_text("dp-mandatory = true\n")
    lines: list[str] = []
    results = tmp_path / "results"
    files = write_site_policies(StudyConfig(dp=False), [sites[0], own_site], results, lines.append)
    assert files == {sites[0].name: results / "sites" / sites[0].name / POLICY_FILE_NAME,
                     own_site.name: own_site.site_dir / POLICY_FILE_NAME}
    assert any(NON_DP_NOTE in line for line in lines)
    assert any(f"{own_site.name}: its own privacy policy" in line for line in lines)
    configs = simulated_node_configs([sites[0], own_site], results, "cpu", files)
    with simulated_nodes(configs, results):
        for partition, expected_dp_mandatory in [(0, False), (1, True)]:
            node = {"partition-id": partition}
            assert load_site_policy(node, resolve_site_context(node)).dp_mandatory is expected_dp_mandatory
    assert list(own_site.site_dir.iterdir()) == [own_site.site_dir / POLICY_FILE_NAME]  # nothing written there


def test_simulated_sites_split_by_the_study_and_the_baselines_use_each_sites_actual_split(small_cohort: Path,
                                                                                         tmp_path: Path) -> None:
    study = StudyConfig(seed=3, test_fraction=0.4)
    site = find_sites(small_cohort)[0]
    assert simulated_site_policy(study).split == PatientSplit(3, 0.4) == site_split(site, study)
    own_site = CohortSite("own", tmp_path / "own")
    own_site.site_dir.mkdir()
    (own_site.site_dir / POLICY_FILE_NAME).write_text("split-seed = 7\nuse-split-column = false\n")
    assert site_split(own_site, study) == PatientSplit(7, 0.25, use_split_column=False)
