"""A site's personalized model: the final global model with its task heads fine-tuned on the site's own patients.

With ``personalization-epochs`` > 0, the evaluate message of the study's last round (``server-round`` =
``num-server-rounds``) makes each site fine-tune only the task heads (parameters ``heads.*``: the fusion model's
heads, the linear model's per-task output layers) of the received global model on its training patients, for that
many epochs, with DP-SGD when the study says so. It is a privacy spend like a train round, in the same order:

1. **replay**: personalized weights already stored for this study and the same global model are reused: no second
   training, no second charge;
2. **charge** the planned DP steps to the site's ledger, as their own entry (study ``<study-id>/personalization``),
   refused when the site's budget would be exceeded (with a ``target-epsilon`` at the noise the site recorded for
   the study; the fine-tuning's spend is outside the study's target, counted against the lifetime ``max-epsilon``);
3. **train** the heads; 4. **store** the weights (atomically); 5. **settle** the ledger with the steps taken.

The personalized weights stay at the site: ``<ledger-dir>/personalized/<study-id>.pt``
({"study_id", "received_sha256", "weights"}), never sent. Only their aggregate metrics on the site's held-out
patients leave, prefixed ``personalized-`` beside the global model's in the evaluate reply.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fedfusion.atomic_io import atomic_write_bytes
from fedfusion.errors import CorruptReplyError
from fedfusion.privacy.accounting import history_delta, planned_round
from fedfusion.privacy.calibration import site_calibration
from fedfusion.privacy.ledger import PrivacyLedger
from fedfusion.privacy.site_policy import SitePolicy
from fedfusion.site.round_replay import weights_digest
from fedfusion.site.trainer import SiteTrainer
from fedfusion.study.config import StudyConfig

PERSONALIZED_DIR = "personalized"
HEADS_PREFIX = "heads."
"""The parameters personalization trains: both study models keep one output layer per task in ``heads``."""
LEDGER_STUDY_SUFFIX = "/personalization"
"""Appended to the study id of a personalization's ledger entry (its own entry, not one of the study's rounds)."""


def personalization_due(study: StudyConfig, server_round: int) -> bool:
    """True when an evaluate message of ``server_round`` asks the site to personalize (the study's last round)."""
    return study.personalization_epochs > 0 and server_round == study.num_server_rounds


class PersonalizedStore:
    """A site's personalized weights of one study, beside its privacy ledger."""

    def __init__(self, ledger_dir: Path, study_id: str, site: str) -> None:
        self.path = Path(ledger_dir) / PERSONALIZED_DIR / f"{study_id}.pt"
        self.study_id = study_id
        self.site = site

    def find(self, received: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The weights personalized from ``received`` in this study, or None; ``CorruptReplyError`` if unreadable."""
        if not self.path.exists():
            return None
        try:
            stored = torch.load(io.BytesIO(self.path.read_bytes()), weights_only=True)
            if (stored["study_id"], stored["received_sha256"]) != (self.study_id, weights_digest(received)):
                return None
            return dict(stored["weights"])
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, IndexError, TypeError, ValueError,
                RuntimeError) as exc:
            raise CorruptReplyError(f"site {self.site}: personalized model", self.path,
                                    f"{type(exc).__name__}: {exc}",
                                    "refusing to personalize again without knowing what was spent") from exc

    def store(self, received: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> None:
        """Keep ``weights`` (personalized from ``received``) atomically, replacing the study's earlier ones."""
        buffer = io.BytesIO()
        torch.save({"study_id": self.study_id, "received_sha256": weights_digest(received),
                    "weights": dict(weights)}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())


@dataclass(frozen=True)
class Personalization:
    """What personalizing one site needs: its trainer, ledger, policy and the store of its personalized weights."""

    trainer: SiteTrainer
    ledger: PrivacyLedger
    policy: SitePolicy
    store: PersonalizedStore

    def weights(self, received: dict[str, torch.Tensor], *, server_round: int, run_id: int) -> dict[str, torch.Tensor]:
        """The personalized weights of ``received``: the stored ones, else fine-tuned (charged, stored, settled).

        ``SiteRefusal`` when the site's budget would be exceeded; ``CorruptLedgerError`` / ``CorruptReplyError``
        when the ledger or the stored weights are unreadable.
        """
        stored = self.store.find(received)
        if stored is not None:
            return stored
        study = self.trainer.study
        patients = len(self.trainer.cohort.train)
        sigma = (site_calibration(self.ledger, study, self.store.study_id, patients, self.policy.accountant)
                 .noise_multiplier if study.dp and study.target_epsilon > 0 else study.noise_multiplier)
        planned = (planned_round(sigma, patients, study.batch_size, study.personalization_epochs)
                   if study.dp else None)
        charge = self.ledger.charge(run_id=run_id, server_round=server_round, planned=planned, policy=self.policy,
                                    study_id=self.store.study_id + LEDGER_STUDY_SUFFIX)
        outcome = self.trainer.train(received, accountant_history=charge.prior,
                                     seed=study.training_seed * 100_003 + server_round + 1,
                                     epochs=study.personalization_epochs, train_only=HEADS_PREFIX,
                                     noise_multiplier=sigma)
        self.store.store(received, outcome.weights)  # before settling: a kill after this point reuses them
        self.ledger.settle(charge, history_delta(charge.prior, outcome.accountant_history))
        return outcome.weights
