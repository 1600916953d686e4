"""Test helpers: call the site's real ClientApp the way a SuperNode does, on a small synthetic cohort.

A SuperNode receives a message from the SuperLink, rebuilds it from its metadata and content
(``flwr.common.serde.message_from_proto`` -> ``make_message``), builds a ``Context`` from the run config and its
node config, and calls the ClientApp with both. These helpers do the same, without a network. A site's slide
features are prepared first, as its admin does with ``fedfusion site prepare`` (rounds only read the cache).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata

from fedfusion.data.cohort_index import SCHEMA_FILE, CohortSite
from fedfusion.data.slides.prepare import prepare_slide_features
from fedfusion.models.fusion_model import build_model
from fedfusion.privacy.site_policy import SitePolicy, policy_to_toml
from fedfusion.site.client_app import app
from fedfusion.study.config import StudyConfig
from fedfusion.study.run_config import StudyRun
from fedfusion.study.schema import load_schema

RUN_ID = 7
SUPERLINK_NODE_ID = 1


def small_study(cohort_dir: Path, *, modalities: str | None = None, **changes: Any) -> StudyConfig:
    """A fast study on ``cohort_dir`` (its schema): a small model, one local epoch, batches of 4 patients, the fixed
    noise multiplier 1.0 (``target_epsilon`` in ``changes`` calibrates instead); ``modalities`` ("wsi,omics") fuses
    only those."""
    study = StudyConfig(schema=load_schema(cohort_dir / SCHEMA_FILE).to_json(), hidden_dim=8, local_epochs=1,
                        batch_size=4, tiles_per_patient=4, noise_multiplier=1.0, target_epsilon=0.0).replace(**changes)
    return study if modalities is None else study.with_modalities(modalities.split(","))


SMALL_COHORT_POLICY = SitePolicy(min_eval_patients=1)
"""The built-in default policy, but evaluating on any number of held-out patients: the small test cohorts hold 2 to
5 per site, which a real site's default (``min-eval-patients`` 20) refuses to evaluate on."""

_PREPARED: dict[Path, Path] = {}
"""Site folder -> a feature cache prepared for it in this test session (copied into each test's cache folder)."""


def prepare_site(site: CohortSite, cache_dir: Path) -> Path:
    """Fill ``cache_dir`` with ``site``'s slide features for the default study's slide knobs; return it.

    What ``fedfusion site prepare SITE --cache-dir CACHE_DIR`` writes; extracted once per test session and site,
    then copied (the small studies of these tests keep the default encoder and tiling).
    """
    if site.site_dir not in _PREPARED:
        root = Path(tempfile.mkdtemp(prefix="fedfusion-prepared-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        summary = prepare_slide_features(site.site_dir, StudyConfig(), cache_dir=root / "cache", device="cpu")
        assert summary.ok and not summary.failures, summary.report()
        _PREPARED[site.site_dir] = root / "cache"
    shutil.copytree(_PREPARED[site.site_dir], cache_dir, dirs_exist_ok=True)
    return cache_dir


def deployed_node_config(site: CohortSite, cache_dir: Path, ledger_dir: Path,
                         policy_file: Path | None = None, *, prepared: bool = True) -> dict[str, str]:
    """The node config a site admin gives a deployed SuperNode for ``site``, its features prepared in
    ``cache_dir/<site>`` first (``prepared=False``: an admin who skipped ``fedfusion site prepare``); without a
    ``policy_file``, ``SMALL_COHORT_POLICY`` is written to ``cache_dir/<site>.policy.toml`` and named."""
    if prepared:
        prepare_site(site, cache_dir / site.name)
    if policy_file is None:
        policy_file = cache_dir / f"{site.name}.policy.toml"
        policy_file.parent.mkdir(parents=True, exist_ok=True)
        policy_file.write_text(policy_to_toml(SMALL_COHORT_POLICY), encoding="utf-8")
    config = {"site-name": site.name, "data-dir": str(site.site_dir), "cache-dir": str(cache_dir / site.name),
              "ledger-dir": str(ledger_dir), "device": "cpu"}
    config["policy-file"] = str(policy_file)
    return config


def instruction(message_type: str, study: StudyConfig, server_round: int, node_id: int = 11) -> Message:
    """A train or evaluate instruction as the SuperNode rebuilds it: global weights and the round's config."""
    content = RecordDict({"arrays": ArrayRecord(build_model(study, seed=study.training_seed).state_dict()),
                          "config": ConfigRecord({"server-round": server_round})})
    metadata = Metadata(run_id=RUN_ID, message_id=uuid.uuid4().hex, src_node_id=SUPERLINK_NODE_ID,
                        dst_node_id=node_id, reply_to_message_id="", group_id=str(server_round),
                        created_at=time.time(), ttl=3600.0, message_type=message_type)
    return Message(metadata=metadata, content=content)


def site_context(study: StudyConfig, node_config: dict[str, str], study_id: str = "") -> Context:
    """A fresh Context, as a fresh ``flwr-clientapp`` process gets it (``study_id`` empty: derived)."""
    return Context(run_id=RUN_ID, node_id=11, node_config=node_config, state=RecordDict(),
                   run_config=StudyRun.of(study, study_id).to_run_config())


def call_site(message_type: str, study: StudyConfig, node_config: dict[str, str], server_round: int = 1,
              study_id: str = "") -> Message:
    """Call the real ClientApp with a fresh Context (as a fresh ``flwr-clientapp`` process would)."""
    return app(instruction(message_type, study, server_round), site_context(study, node_config, study_id))
