"""Where a site's data, cache, device and privacy folder come from: its node config, and nothing else.

A deployed site daemon gets its facts from Flower's ``context.node_config`` (set by the site admin when the
SuperNode starts): ``site-name``, ``data-dir`` and optionally ``cache-dir``, ``device``
(``auto``: the GPU when there is one), ``fallback-mpp``, ``encoder-file`` (the site's copy of a ``torchscript:`` /
``safetensors:`` study encoder), ``skip-bad`` (true: a bad slide or a manifest patient without clinical labels
is skipped with a note instead of
stopping the site), and the privacy keys of ``fedfusion.site.site_privacy`` (``ledger-dir``, ``policy-file``).

A simulated SuperNode's node config holds only Flower's ``partition-id``: its site's node config is row
``partition-id`` of the JSON list in the file that the environment variable ``FEDFUSION_SIMULATED_NODES`` names.
``fedfusion simulate`` writes that file (``fedfusion.simulation.simulated_nodes``), playing each site's admin: the
site's folder in the cohort, its ledger folder inside the run's results (each simulation is an experiment with its
own privacy accounting) and the device. Nothing a site resolves here comes from the study's run config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfusion.errors import ConfigError

PARTITION_ID_KEY = "partition-id"
"""Flower's node config key of a simulated SuperNode."""
SIMULATED_NODES_ENV = "FEDFUSION_SIMULATED_NODES"
"""Environment variable naming the JSON file of simulated sites' node configs (a list, index = partition id)."""
DEFAULT_DEVICE = "auto"


@dataclass(frozen=True)
class SiteContext:
    """One site's local facts; none of them leaves the site except ``name``."""

    name: str
    data_dir: Path
    cache_dir: Path | None
    device: str
    fallback_mpp: float | None
    encoder_file: Path | None = None
    """The site's copy of a user-supplied TorchScript tile encoder, when the study uses one."""
    skip_bad: bool = False
    """Skip bad slides and unlabelled patients (each reported) instead of failing."""


def resolve_site_context(node_config: Mapping[str, Any]) -> SiteContext:
    """Build the site's context from its node config (a simulated node's: from the simulated-nodes file)."""
    node_config = effective_node_config(node_config)
    missing = [key for key in ("site-name", "data-dir") if key not in node_config]
    if missing:
        raise ConfigError(f"site node config lacks {missing} (has {sorted(node_config)})")
    return SiteContext(
        name=str(node_config["site-name"]),
        data_dir=Path(str(node_config["data-dir"])),
        cache_dir=Path(str(node_config["cache-dir"])) if "cache-dir" in node_config else None,
        device=str(node_config.get("device", DEFAULT_DEVICE)),
        fallback_mpp=float(node_config["fallback-mpp"]) if "fallback-mpp" in node_config else None,
        encoder_file=Path(str(node_config["encoder-file"])) if "encoder-file" in node_config else None,
        skip_bad=_flag(node_config, "skip-bad"),
    )


def effective_node_config(node_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The node config itself, or for a simulated node (only ``partition-id``) its row of the simulated-nodes file."""
    if "data-dir" in node_config or PARTITION_ID_KEY not in node_config:
        return node_config
    table_file = os.environ.get(SIMULATED_NODES_ENV)
    if not table_file:
        raise ConfigError(f"simulated node {node_config[PARTITION_ID_KEY]} has no node config: "
                          f"{SIMULATED_NODES_ENV} is not set (run simulations with `fedfusion simulate`)")
    try:
        table = json.loads(Path(table_file).read_text(encoding="utf-8"))
        row = table[int(node_config[PARTITION_ID_KEY])]
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"simulated nodes file {table_file}: no node config for partition "
                          f"{node_config[PARTITION_ID_KEY]} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(row, dict):
        raise ConfigError(f"simulated nodes file {table_file}: row {node_config[PARTITION_ID_KEY]} is not a table")
    return {**node_config, **row}


def _flag(node_config: Mapping[str, Any], key: str) -> bool:
    """A boolean node config value (true/false, as TOML or text); absent is false."""
    value = node_config.get(key, False)
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false"):
        return str(value).strip().lower() == "true"
    raise ConfigError(f"site node config '{key}' must be true or false, got {value!r}")
