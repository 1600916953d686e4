"""The coordinator resubmits the studies it was running when it stopped, once its SuperLink and gateway are up.

Each interrupted study (``study.json`` still ``running``) is submitted again by a child process,
``fedfusion study start --resubmit ID`` (same app, so the same FAB hash: the sites need no new approval; same
results folder, so the ServerApp resumes from its checkpoint at the next round). Its output goes to
``STATE_DIR/logs/study-<id>.log``. The child marks the study ``finished`` or ``failed`` as an operator's
``study start`` does; a study already submitted ``MAX_SUBMISSIONS`` times is marked failed instead of being
submitted again. On shutdown the daemon stops the children (by their process groups) before the SuperLink, so an
interrupted study stays ``running`` and is resumed at the next start.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fedfusion.deployment.coordinator.state import CoordinatorPaths
from fedfusion.deployment.coordinator.study_state import FAILED, ended, interrupted_studies, read_study, write_study
from fedfusion.deployment.processes import start_process, stop_process

logger = logging.getLogger("fedfusion.coordinator")

MAX_SUBMISSIONS = 5
"""A study submitted this often (first submission included) and interrupted again is not resubmitted."""


@dataclass
class StudyResumer:
    """The children resubmitting this coordinator's interrupted studies."""

    paths: CoordinatorPaths
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def resubmit_interrupted(self) -> None:
        """Start one ``study start --resubmit`` child per interrupted study (or mark it failed past the limit)."""
        for study_id in interrupted_studies(self.paths):
            record = read_study(self.paths, study_id)
            if record.submissions >= MAX_SUBMISSIONS:
                write_study(self.paths, ended(record, FAILED))
                logger.error("study %s was interrupted after %d submissions; marked failed, not resubmitted "
                             "(`fedfusion study start --resubmit %s` submits it again)", study_id, record.submissions,
                             study_id)
                continue
            logger.info("resubmitting study %s (interrupted); its log: %s", study_id, self._log_file(study_id))
            self.children[study_id] = start_process(
                [sys.executable, "-m", "fedfusion.cli", "study", "start", "--state-dir", str(self.paths.state_dir),
                 "--resubmit", study_id], self._log_file(study_id), dict(os.environ))

    def reap(self) -> None:
        """Log each resubmission that has ended, with the study's state."""
        for study_id, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[study_id]
                logger.info("resubmitted study %s ended: %s", study_id, read_study(self.paths, study_id).status)

    def stop(self) -> None:
        """Stop every running resubmission (its study stays ``running``, to be resumed at the next start)."""
        for study_id, child in self.children.items():
            if child.poll() is None:
                logger.info("stopping the resubmission of study %s (resumed at the next start)", study_id)
            stop_process(child)
        self.children.clear()

    def _log_file(self, study_id: str) -> Path:
        return self.paths.logs_dir / f"study-{study_id}.log"
