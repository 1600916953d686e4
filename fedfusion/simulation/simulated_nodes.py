"""The node configs of a simulation's sites: what each site's admin would set on its SuperNode.

Flower's simulation engine gives a simulated SuperNode only ``partition-id``; ``fedfusion simulate`` writes the
node config of each simulated site into ``<results>/sites/nodes.json`` (a list, index = partition id) and names the
file in ``FEDFUSION_SIMULATED_NODES`` for the engine's processes, where ``fedfusion.site.node_context`` reads it.
So a simulated site resolves its data folder, device and ledger folder exactly as a deployed one does, and none of
them travels in the study's run config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.data.cohort_index import CohortSite
from fedfusion.site.node_context import SIMULATED_NODES_ENV
from fedfusion.site.site_privacy import LEDGER_DIR_KEY

SIMULATED_SITES_DIR = "sites"
"""Folder of a simulation's results holding one privacy folder (ledger, egress record) per simulated site."""
NODES_FILE = "nodes.json"


def simulated_node_configs(sites: Sequence[CohortSite], results_dir: Path, device: str) -> list[dict[str, str]]:
    """One node config per simulated site: its cohort folder, its ledger folder, the device."""
    return [{"site-name": site.name, "data-dir": str(site.site_dir),
             LEDGER_DIR_KEY: str(results_dir / SIMULATED_SITES_DIR / site.name), "device": device} for site in sites]


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
