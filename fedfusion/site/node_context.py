"""Where a site's data, cache and device come from, for a deployed SuperNode or a simulated one.

A deployed site daemon gets its facts from Flower's ``context.node_config`` (set by the site admin when the
SuperNode starts): ``site-name``, ``data-dir``, ``gene-panel`` and optionally ``cache-dir``, ``device``,
``fallback-mpp``, ``encoder-file`` (the site's copy of a ``torchscript:`` / ``safetensors:`` study encoder),
``cnv-panel`` (the study's copy-number gene list, when it has that layer) and ``skip-bad`` (true: a bad slide or
a manifest patient without clinical labels is skipped with a note instead of stopping the site). A simulated
site has only ``partition-id``; it is then the partition-th site listed in the
cohort index under the study's ``cohort-dir``, and keeps its privacy ledger and egress record in the run's results
folder (``<results-dir>/sites/<site>/``): each simulation is an experiment with its own privacy accounting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfusion.data.cohort_index import read_cohort_index
from fedfusion.errors import ConfigError
from fedfusion.study.config import StudyConfig

PARTITION_ID_KEY = "partition-id"
SIMULATED_SITES_DIR = "sites"
"""Folder of a simulation's results holding one privacy folder per simulated site."""


@dataclass(frozen=True)
class SiteContext:
    """One site's local facts; none of them leaves the site except ``name``."""

    name: str
    data_dir: Path
    gene_panel: Path
    cache_dir: Path | None
    device: str
    fallback_mpp: float | None
    encoder_file: Path | None = None
    """The site's copy of a user-supplied TorchScript tile encoder, when the study uses one."""
    privacy_dir: Path | None = None
    """A simulated site's ledger and egress folder; None for a deployed site (its node config decides)."""
    cnv_panel: Path | None = None
    """The study's copy-number gene list; None when the study has no copy-number layer."""
    skip_bad: bool = False
    """Skip bad slides and unlabelled patients (each reported) instead of failing."""


def resolve_site_context(node_config: Mapping[str, Any], study: StudyConfig) -> SiteContext:
    """Build the site's context from its node config (deployment) or its partition id (simulation)."""
    if "data-dir" in node_config:
        missing = [key for key in ("site-name", "gene-panel") if key not in node_config]
        if missing:
            raise ConfigError(f"site node config has 'data-dir' but lacks {missing}")
        return SiteContext(
            name=str(node_config["site-name"]),
            data_dir=Path(str(node_config["data-dir"])),
            gene_panel=Path(str(node_config["gene-panel"])),
            cache_dir=Path(str(node_config["cache-dir"])) if "cache-dir" in node_config else None,
            device=str(node_config.get("device", study.device)),
            fallback_mpp=float(node_config["fallback-mpp"]) if "fallback-mpp" in node_config else None,
            encoder_file=Path(str(node_config["encoder-file"])) if "encoder-file" in node_config else None,
            cnv_panel=Path(str(node_config["cnv-panel"])) if "cnv-panel" in node_config else None,
            skip_bad=_flag(node_config, "skip-bad"),
        )
    if PARTITION_ID_KEY in node_config:
        index = read_cohort_index(Path(study.cohort_dir))
        partition = int(node_config[PARTITION_ID_KEY])
        if not 0 <= partition < len(index.sites):
            raise ConfigError(
                f"simulated node {partition} has no site: cohort '{study.cohort_dir}' lists {len(index.sites)} sites"
            )
        site = index.sites[partition]
        return SiteContext(
            name=site.name,
            data_dir=site.site_dir,
            gene_panel=index.gene_panel_path,
            cache_dir=None,
            device=study.device,
            fallback_mpp=None,
            privacy_dir=Path(study.results_dir) / SIMULATED_SITES_DIR / site.name if study.results_dir else None,
            cnv_panel=index.cnv_panel_path,
        )
    raise ConfigError("node config names neither 'data-dir' (a deployed site) nor 'partition-id' (a simulated one)")


def _flag(node_config: Mapping[str, Any], key: str) -> bool:
    """A boolean node config value (true/false, as TOML or text); absent is false."""
    value = node_config.get(key, False)
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false"):
        return str(value).strip().lower() == "true"
    raise ConfigError(f"site node config '{key}' must be true or false, got {value!r}")
