"""``fedfusion study start``: submit a study (the Flower app and its run config) to the coordinator, follow it.

The study becomes a Flower app folder (``pyproject.toml`` only: fedfusion's ServerApp and ClientApp and the
study config, written by ``write_flower_app``); its FAB hash is printed, since each site approves apps by hash or
by fedfusion version. Flower's own ``flwr run APP fedfusion-coordinator --stream`` builds the same FAB and
submits it over the loopback Control API, then streams the run's log until it ends. The ServerApp writes the
results folder (``results-dir``) at the coordinator; the study has finished when it did and at least one site
trained (a study every site refused has failed). The deployment's study id is the app's ``study-id``, so the
ServerApp's checkpoint and the sites' ledger rounds are keyed by it. When the coordinator stops during the run,
the study stays ``running`` (interrupted): the coordinator resubmits it when it starts again.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fedfusion.deployment.coordinator.state import CONNECTION_NAME, CoordinatorPaths, read_daemon_info, running_daemon
from fedfusion.deployment.coordinator.study_state import (
    FAILED,
    FINISHED,
    PREPARED,
    RUNNING,
    STUDY_FILE,
    StudyRecord,
    ended,
    now,
    read_study,
    study_folder,
    write_study,
)
from fedfusion.deployment.processes import flower_env, flower_script
from fedfusion.errors import ConfigError, FedfusionError
from fedfusion.flower_compat import build_fab
from fedfusion.study.config import StudyConfig
from fedfusion.study.flower_app import write_flower_app
from fedfusion.study.run_config import CoordinatorSettings, StudyRun

RESULTS_MARKER = "metrics.json"
"""Written by the ServerApp's recorder when the study completes; lists each site's reply per round."""
_STUDY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def app_hash(app_dir: Path) -> str:
    """The SHA-256 of the FAB Flower builds from ``app_dir`` (deterministic: fixed dates, sorted files)."""
    return hashlib.sha256(build_fab(app_dir)).hexdigest()


def prepare_study(paths: CoordinatorPaths, study: StudyConfig, study_id: str,
                  settings: CoordinatorSettings | None = None) -> StudyRecord:
    """Write a new study's Flower app and state (results under its folder unless ``settings`` name one)."""
    if not _STUDY_ID.fullmatch(study_id):
        raise ConfigError(f"study id {study_id!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    folder = study_folder(paths, study_id)
    if folder.exists():
        raise ConfigError(f"study {study_id!r} already exists at {folder}; choose another id or --resubmit it")
    settings = settings or CoordinatorSettings()
    results_dir = Path(settings.results_dir) if settings.results_dir else folder / "results"
    run = StudyRun.of(study, study_id, replace(settings, results_dir=str(results_dir.resolve())))
    app_dir = write_flower_app(run, folder / "app")
    record = StudyRecord(study_id=study_id, status=PREPARED, fab_hash=app_hash(app_dir), app_dir=str(app_dir),
                         results_dir=str(results_dir.resolve()), submitted=now())
    write_study(paths, record)
    return record


def prepared_study(paths: CoordinatorPaths, study_id: str) -> StudyRecord | None:
    """The study prepared (not yet submitted) under this id, or None when there is no such study."""
    if not (study_folder(paths, study_id) / STUDY_FILE).is_file():
        return None
    record = read_study(paths, study_id)
    if record.status != PREPARED:
        raise ConfigError(f"study {study_id!r} was already submitted ({record.status}); use --resubmit {study_id} "
                          "or a new id")
    return record


def run_study(paths: CoordinatorPaths, record: StudyRecord, echo: Callable[[str], None]) -> StudyRecord:
    """Submit the study's app to the running coordinator and follow its log until the run ends.

    When the run ends because the coordinator it was submitted to stopped (or another submission of the study
    took over), the study's state is left to the coordinator's resubmission: the returned record is ``running``.
    """
    daemon = read_daemon_info(paths)  # a clear error when no coordinator runs with this state folder
    if app_hash(Path(record.app_dir)) != record.fab_hash:
        raise ConfigError(f"study {record.study_id}: its app folder {record.app_dir} changed since it was prepared")
    record = replace(record, status=RUNNING, submitted=now())
    write_study(paths, record)
    log_file = study_folder(paths, record.study_id) / "flwr-run.log"
    with log_file.open("a", encoding="utf-8") as log, subprocess.Popen(
        [flower_script("flwr"), "run", record.app_dir, CONNECTION_NAME, "--stream"],
        env=flower_env(paths.flwr_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as flwr_run:
        if flwr_run.stdout is None:  # Popen with stdout=PIPE always has one
            raise FedfusionError(f"study {record.study_id}: `flwr run` started without its output pipe")
        for line in flwr_run.stdout:
            log.write(line)
            echo(line.rstrip("\n"))
    if flwr_run.returncode != 0 and _interrupted(paths, record, daemon.pid):
        echo(f"study {record.study_id}: the coordinator stopped during the study; it resumes the study when it "
             f"starts again (checkpoint in the results folder; with --no-resume: `fedfusion study start --resubmit "
             f"{record.study_id}`)")
        return record
    trained = _site_rounds_trained(Path(record.results_dir))
    if flwr_run.returncode == 0 and trained == 0:
        echo(f"study {record.study_id}: no site trained in any round (refused or failed; see above)")
    record = ended(record, FINISHED if flwr_run.returncode == 0 and trained > 0 else FAILED)
    write_study(paths, record)
    return record


def _interrupted(paths: CoordinatorPaths, record: StudyRecord, daemon_pid: int) -> bool:
    """Did the coordinator (pid ``daemon_pid``) stop during the run, or did a later submission take it over?"""
    running = running_daemon(paths)
    if running is None or running.pid != daemon_pid:
        return True
    return read_study(paths, record.study_id).submissions != record.submissions


def _site_rounds_trained(results_dir: Path) -> int:
    """How many (site, round) training replies the results folder records; 0 when it was not written."""
    try:
        rows = json.loads((results_dir / RESULTS_MARKER).read_text(encoding="utf-8"))["sites"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(1 for row in rows if row.get("phase") == "train" and "error" not in row)


def resubmission(paths: CoordinatorPaths, study_id: str) -> StudyRecord:
    """An interrupted or failed study, to be submitted again with the same app and results folder."""
    record = read_study(paths, study_id)
    if record.status == FINISHED:
        raise ConfigError(f"study {study_id!r} has finished; its results are in {record.results_dir}")
    return replace(record, submissions=record.submissions + 1, ended=None)
