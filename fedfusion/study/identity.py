"""Which study is this? A name that survives coordinator restarts, and a hash of what defines the study.

Flower gives every submission a new run id, so a study resubmitted after a coordinator restart needs a name of
its own: the run-config key ``study-id``, or, when it is empty, ``cfg-<hash>`` of the study config. The
coordinator uses it to find its checkpoint; each site uses it (not the run id) to key its privacy-ledger rounds
and stored replies, so a resumed round is never trained, nor its privacy spent, twice.
"""

from __future__ import annotations

import hashlib
import json

from fedfusion.study.config import StudyConfig

RUNTIME_KEYS = ("study-id", "results-dir", "device", "round-timeout")
"""Run-config keys that say where and how a study runs, not what it computes: changing them keeps the study."""


def defining_config(study: StudyConfig) -> dict[str, bool | int | float | str]:
    """The run config without ``RUNTIME_KEYS``: what a resumed study must not change."""
    return {key: value for key, value in study.to_run_config().items() if key not in RUNTIME_KEYS}


def config_hash(study: StudyConfig) -> str:
    """sha256 (hex) of the defining config, keys sorted."""
    return hashlib.sha256(json.dumps(defining_config(study), sort_keys=True).encode()).hexdigest()


def study_id(study: StudyConfig) -> str:
    """The study's name: ``study-id`` when set, else ``cfg-`` and the first 16 hex digits of ``config_hash``."""
    return study.study_id or f"cfg-{config_hash(study)[:16]}"
