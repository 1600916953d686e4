"""The node configs of a simulation's sites: what each site's admin would set on its SuperNode.

Flower's simulation engine gives a simulated SuperNode only ``partition-id``; ``fedfusion simulate`` writes the
node config of each simulated site into ``<results>/sites/nodes.json`` (a list, index = partition id) and names the
file in ``FEDFUSION_SIMULATED_NODES`` for the engine's processes, where ``fedfusion.site.node_context`` reads it.
So a simulated site resolves its data folder, device and ledger folder exactly as a deployed one does, and none of
them travels in the study's run config.

In a simulation the researcher plays every site's admin, so a simulated site's privacy policy follows the study
(``simulated_site_policy``): the built-in default of ``fedfusion.privacy.site_policy``, relaxed only where the study
asks more (a non-DP study: ``dp-mandatory = false`` and ``max-epsilon = inf``; a lower noise multiplier, a larger
clipping norm or delta). It is written to ``<results>/sites/<site>/privacy_policy.toml`` and named by the node
config key ``policy-file``. A site folder's own ``privacy_policy.toml`` wins: then that file is named instead.
The researcher also sets each site's split: a simulated site splits by the study's ``seed`` and ``test-fraction``
(``split-seed``, ``test-fraction`` of its policy), and ``site_split`` gives the baselines the split each site
actually uses (its own policy's when it has one), so they score the same held-out patients. The researcher holds
every patient anyway, so a simulated site evaluates on any number of held-out patients (``min-eval-patients`` 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.cohort_index import CohortSite
from fedfusion.data.patient_split import PatientSplit
from fedfusion.privacy.site_policy import POLICY_FILE_NAME, SitePolicy, load_policy, policy_to_toml
from fedfusion.site.node_context import SIMULATED_NODES_ENV
from fedfusion.site.site_privacy import LEDGER_DIR_KEY, POLICY_FILE_KEY
from fedfusion.study.config import StudyConfig

SIMULATED_SITES_DIR = "sites"
"""Folder of a simulation's results holding one privacy folder (ledger, egress record) per simulated site."""
NODES_FILE = "nodes.json"


NON_DP_NOTE = "simulated sites accept a non-DP study: their policy follows the study in a simulation"
POLICY_HEADER = ("# Written by `fedfusion simulate`: in a simulation the researcher plays every site's admin,\n"
                 "# so this simulated site's privacy policy follows the study.\n"
                 "# A real site writes its own (docs/SITE_GUIDE.md).\n")


def simulated_site_policy(study: StudyConfig) -> SitePolicy:
    """The policy of a simulated site without its own: the built-in default, relaxed only where ``study`` asks more."""
    default = dataclasses.replace(SitePolicy(), split_seed=study.seed, test_fraction=study.test_fraction,
                                  min_eval_patients=1)
    if not study.dp:
        return dataclasses.replace(default, dp_mandatory=False, max_epsilon=math.inf, source="fedfusion simulate")
    return dataclasses.replace(
        default, min_noise_multiplier=min(default.min_noise_multiplier, study.noise_multiplier),
        max_grad_norm=max(default.max_grad_norm, study.max_grad_norm), delta=max(default.delta, study.delta),
        max_target_epsilon=max(default.max_target_epsilon, study.target_epsilon), source="fedfusion simulate")


def site_split(site: CohortSite, study: StudyConfig) -> PatientSplit:
    """The split ``site`` uses in a simulation of ``study``: its folder's own policy's, else the study's."""
    own = site.site_dir / POLICY_FILE_NAME
    return (load_policy(own) if own.is_file() else simulated_site_policy(study)).split


def write_site_policies(study: StudyConfig, sites: Sequence[CohortSite], results_dir: Path,
                        emit: Callable[[str], None]) -> dict[str, Path]:
    """Each site's policy file: its folder's own ``privacy_policy.toml`` if it has one, else one written for it
    under ``<results>/sites/<site>/`` (``simulated_site_policy``). Says which, and when a non-DP study is accepted."""
    text = POLICY_HEADER + policy_to_toml(simulated_site_policy(study))
    files: dict[str, Path] = {}
    for site in sites:
        own = site.site_dir / POLICY_FILE_NAME
        if own.is_file():
            emit(f"{site.name}: its own privacy policy {own} applies (a site folder's policy wins over the "
                 "simulation's)")
            files[site.name] = own
        else:
            files[site.name] = results_dir / SIMULATED_SITES_DIR / site.name / POLICY_FILE_NAME
            atomic_write_text(files[site.name], text)
    written = [name for name, path in files.items() if path.parent.parent == results_dir / SIMULATED_SITES_DIR]
    if written:
        where = results_dir / SIMULATED_SITES_DIR / "<site>" / POLICY_FILE_NAME
        emit((NON_DP_NOTE if not study.dp else "simulated sites' privacy policy follows the study")
             + f" ({', '.join(written)}: {where})")
    return files


def simulated_node_configs(sites: Sequence[CohortSite], results_dir: Path, device: str,
                           policy_files: Mapping[str, Path] | None = None) -> list[dict[str, str]]:
    """One node config per simulated site: its cohort folder, its ledger folder, the device and its policy file
    (``write_site_policies``; without one a site reads its folder's policy or the default)."""
    configs = []
    for site in sites:
        config = {"site-name": site.name, "data-dir": str(site.site_dir),
                  LEDGER_DIR_KEY: str(results_dir / SIMULATED_SITES_DIR / site.name), "device": device}
        if policy_files and site.name in policy_files:
            config[POLICY_FILE_KEY] = str(policy_files[site.name])
        configs.append(config)
    return configs


@contextmanager
def simulated_nodes(configs: list[dict[str, str]], results_dir: Path) -> Iterator[Path]:
    """Write the node configs and name them in ``FEDFUSION_SIMULATED_NODES`` while the simulation runs."""
    path = results_dir / SIMULATED_SITES_DIR / NODES_FILE
    atomic_write_text(path, json.dumps(configs, indent=1) + "\n")
    previous = os.environ.get(SIMULATED_NODES_ENV)
    os.environ[SIMULATED_NODES_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(SIMULATED_NODES_ENV, None)
        else:
            os.environ[SIMULATED_NODES_ENV] = previous
