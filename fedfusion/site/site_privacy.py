"""Where a site keeps its privacy state and which policy it enforces, from its node config.

Node config keys (set by the site admin when the SuperNode starts; the coordinator cannot change them):
``ledger-dir`` (privacy ledger and egress record; default ``<data-dir>/.fedfusion-ledger``) and ``policy-file``
(the site's privacy policy; default ``<data-dir>/privacy_policy.toml`` if that file exists, else the built-in
default of ``fedfusion.privacy.site_policy``). A simulated site's node config is its row of the simulated-nodes
file (``fedfusion.site.node_context.effective_node_config``): its ledger folder is inside the run's results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfusion.privacy.ledger import LEDGER_DIR_NAME, PrivacyLedger, dataset_id
from fedfusion.privacy.site_policy import POLICY_FILE_NAME, SitePolicy, load_policy
from fedfusion.site.node_context import SiteContext, effective_node_config

LEDGER_DIR_KEY = "ledger-dir"
POLICY_FILE_KEY = "policy-file"


@dataclass(frozen=True)
class SitePrivacy:
    """The site's privacy folder and policy."""

    ledger_dir: Path
    policy: SitePolicy

    def ledger(self, site: SiteContext) -> PrivacyLedger:
        """The ledger of the site's dataset."""
        return PrivacyLedger(self.ledger_dir, dataset_id(site.name, site.data_dir))


def resolve_site_privacy(node_config: Mapping[str, Any], site: SiteContext) -> SitePrivacy:
    """The site's ledger folder and policy (a named ``policy-file`` that is missing is an error, not a default)."""
    return SitePrivacy(ledger_dir=resolve_ledger_dir(node_config, site), policy=load_site_policy(node_config, site))


def resolve_ledger_dir(node_config: Mapping[str, Any], site: SiteContext) -> Path:
    """The site's privacy folder (ledger and egress record); needs no policy, so it resolves even when that fails."""
    node_config = effective_node_config(node_config)
    if LEDGER_DIR_KEY in node_config:
        return Path(str(node_config[LEDGER_DIR_KEY]))
    return site.data_dir / LEDGER_DIR_NAME


def load_site_policy(node_config: Mapping[str, Any], site: SiteContext) -> SitePolicy:
    """The site's policy: its ``policy-file``, else the one beside its data, else the built-in default."""
    node_config = effective_node_config(node_config)
    if POLICY_FILE_KEY in node_config:
        policy_file: Path | None = Path(str(node_config[POLICY_FILE_KEY]))
    else:
        beside_data = site.data_dir / POLICY_FILE_NAME
        policy_file = beside_data if beside_data.is_file() else None
    return load_policy(policy_file)
