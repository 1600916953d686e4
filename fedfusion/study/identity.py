"""Which study is this? A hash of what defines the study, and the name derived from it.

Flower gives every submission a new run id, so a study resubmitted after a coordinator restart needs a name of
its own: the run-config key ``study-id`` set by the operator, or ``cfg-<hash>`` of the study config
(``fedfusion.study.run_config.StudyRun`` resolves which). The coordinator uses it to find its checkpoint; each site
uses it (not the run id) to key its privacy-ledger rounds and stored replies, so a resumed round is never trained,
nor its privacy spent, twice. The hash covers the whole ``StudyConfig`` and nothing else: the coordinator's
runtime settings and the sites' node facts are not part of it.
"""

from __future__ import annotations

import hashlib
import json

from fedfusion.study.config import StudyConfig


def config_hash(study: StudyConfig) -> str:
    """sha256 (hex) of the study's run config, keys sorted."""
    return hashlib.sha256(json.dumps(study.to_run_config(), sort_keys=True).encode()).hexdigest()


def derived_study_id(study: StudyConfig) -> str:
    """The name of a study its operator did not name: ``cfg-`` and the first 16 hex digits of ``config_hash``."""
    return f"cfg-{config_hash(study)[:16]}"
