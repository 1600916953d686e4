"""Make the SuperLink's registered keys equal the consortium registry's active site keys.

Run by the coordinator daemon at start and whenever ``registry.json`` changes, so ``fedfusion provision rotate``
or ``revoke`` is one command: the new key is registered and the old one (and any key the registry does not list
as active) unregistered, which the SuperLink enforces at the site's next authenticated call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fedfusion.deployment.coordinator.superlink_control import SuperLinkControl, pem_of
from fedfusion.provisioning.registry import load_registry

logger = logging.getLogger(__name__)


@dataclass
class SyncOutcome:
    """What one synchronisation changed at the SuperLink."""

    registered: list[str] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)


def sync_registry(consortium_dir: Path, control: SuperLinkControl) -> SyncOutcome:
    """Register every active site key the SuperLink lacks; unregister every node whose key is not active."""
    registry = load_registry(consortium_dir)
    wanted = {pem_of(key.public_key, site): (site, key.public_key)
              for site, entry in registry.sites.items() if (key := entry.active_key()) is not None}
    outcome = SyncOutcome()
    present = set()
    for node in control.nodes():
        if node.public_key_pem in wanted:
            present.add(node.public_key_pem)
            continue
        control.unregister(node.node_id)
        outcome.unregistered.append(f"{node.name or 'unnamed'} (node {node.node_id})")
    for pem, (site, public_key) in wanted.items():
        if pem not in present:
            node_id = control.register(public_key, site)
            outcome.registered.append(f"{site} (node {node_id})")
    for line in outcome.registered:
        logger.info("registered site key: %s", line)
    for line in outcome.unregistered:
        logger.info("unregistered key not active in the registry: %s", line)
    return outcome
