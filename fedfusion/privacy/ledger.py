"""The site's privacy ledger: every DP step ever taken on a dataset, on the site's disk.

One JSON file per dataset, ``<ledger_dir>/<dataset key>.json``, rewritten atomically (temp file + rename) under
an exclusive lock (``<ledger_dir>/.lock``)::

    {"format": 1, "dataset": KEY, "site": NAME, "data_dir": PATH,
     "rounds": [{"id", "run_id", "study_id", "server_round", "status": "charged" | "settled", "dp": bool,
                 "planned": [[noise, sample_rate, steps]], "counted": [[...]], "reconciled": bool,
                 "charged_at", "settled_at"}],
     "calibrations": [{"study_id", "target_epsilon", "delta", "accountant", "sample_rate", "planned_steps",
                       "noise_multiplier", "patients", "calibrated_at"}]}

(``calibrations`` is absent from files written before studies could declare a target epsilon: read as empty.)

A round is **charged** with its planned steps before training starts, so a crash or kill leaves it counted in
full; after training it is **settled** with what the accountant actually took (the per ``(noise, sample_rate)``
maximum of planned and actual steps, so it never counts less). The ledger's history is the concatenation of the
counted entries merged as Opacus' accountant merges them, so its epsilon is exactly that of one accountant that
took every step. A non-DP round has no accountant: its epsilon is infinite.

A round names its study (``study_id``, stable across coordinator restarts, unlike Flower's ``run_id``) and
``server_round``. Every charge is a new entry: a round charged again
(its training was killed, or its stored reply is gone) is counted again, never merged into the earlier charge.

**Dataset key**: sha256 of the site name and the resolved data folder. Not the folder's contents (adding
patients must not reset the spend on those already there) and not anything from the study config (the
coordinator chooses it and could otherwise reset the budget by renaming a study). Moving a site's data folder
starts a new key: copy the ledger file along (``fedfusion site privacy`` shows the folder of each key).

**A study's budget** (``target-epsilon``): the site's noise multiplier for the study is recorded once per study id
(``StudyCalibration``, the first record wins) and reused for every round of that study; a charge with the record
refuses a round that would push the study's own rounds (replayed with the record's accountant at its delta) above
the study's target. The policy's ``min-noise-multiplier`` applies to every charged entry's noise.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedfusion.atomic_io import atomic_write_text
from fedfusion.errors import CorruptLedgerError, PrivacyError, SiteRefusal
from fedfusion.privacy.accounting import AccountantHistory, epsilon_spent, merged_history, validated_history
from fedfusion.privacy.site_policy import SitePolicy

LEDGER_DIR_NAME = ".fedfusion-ledger"
"""The ledger folder inside a site's data folder when the node config names no ``ledger-dir``."""
LEDGER_FORMAT = 1
LOCK_FILE = ".lock"
TARGET_TOLERANCE = 1e-6
"""Relative slack of the study-budget check (accountant round-off), never more."""


@dataclass(frozen=True)
class DatasetId:
    """What the privacy budget is attached to (see the module docstring)."""

    key: str
    site: str
    data_dir: str


def dataset_id(site_name: str, data_dir: Path) -> DatasetId:
    """The ledger key of ``site_name``'s data in ``data_dir``."""
    folder = str(Path(data_dir).resolve())
    digest = hashlib.sha256(f"{site_name}\0{folder}".encode()).hexdigest()[:16]
    return DatasetId(key=digest, site=site_name, data_dir=folder)


@dataclass(frozen=True)
class LedgerRound:
    """One round's entry in the ledger."""

    id: str
    run_id: int
    server_round: int
    status: str
    """"charged" (before training; counted in full) or "settled" (after training)."""
    dp: bool
    planned: AccountantHistory
    counted: AccountantHistory
    """The entries this round contributes to the ledger's history."""
    reconciled: bool = False
    """True when the actual steps differed from the plan and the larger count was kept."""
    charged_at: str = ""
    settled_at: str = ""
    study_id: str = ""
    """The study the round belongs to (empty in ledgers written before studies were named)."""


@dataclass(frozen=True)
class StudyCalibration:
    """The noise multiplier a site derived for one study from its target epsilon, recorded once per study id."""

    study_id: str
    target_epsilon: float
    delta: float
    accountant: str
    """The mechanism the noise was calibrated with; the study's rounds are checked against the target with it."""
    sample_rate: float
    planned_steps: int
    """The whole study's steps at calibration: rounds x steps per round."""
    noise_multiplier: float
    patients: int
    """The site's training patients at calibration (a later cohort size keeps this noise)."""
    calibrated_at: str = ""


@dataclass(frozen=True)
class Charge:
    """A charged round: its id and the ledger history before it (what training resumes)."""

    round_id: str
    prior: AccountantHistory = field(default_factory=list)


class PrivacyLedger:
    """The rounds spent on one dataset, persisted in ``directory``."""

    def __init__(self, directory: Path, dataset: DatasetId) -> None:
        self.directory = Path(directory)
        self.dataset = dataset

    @property
    def path(self) -> Path:
        """The ledger file of this dataset."""
        return self.directory / f"{self.dataset.key}.json"

    def rounds(self) -> list[LedgerRound]:
        """All rounds on disk, oldest first (empty when nothing was spent)."""
        return self._read()

    def calibrations(self) -> list[StudyCalibration]:
        """Every study's recorded noise calibration, oldest first."""
        return self._read_all()[1]

    def calibration(self, study_id: str) -> StudyCalibration | None:
        """The noise calibration recorded for ``study_id`` (``None`` before its first charge)."""
        return next((c for c in self.calibrations() if c.study_id == study_id), None)

    def record_calibration(self, calibration: StudyCalibration) -> StudyCalibration:
        """Record ``calibration`` unless its study has one already; return the one that holds (the first)."""
        with self._locked():
            rounds, calibrations = self._read_all()
            recorded = next((c for c in calibrations if c.study_id == calibration.study_id), None)
            if recorded is not None:
                return recorded
            stamped = StudyCalibration(**{**asdict(calibration), "calibrated_at": calibration.calibrated_at or _now()})
            self._write(rounds, [*calibrations, stamped])
        return stamped

    def history(self) -> AccountantHistory:
        """The Opacus accountant history of every counted step, merged as one accountant would hold it."""
        return merged_history([entry for r in self._read() for entry in r.counted])

    def epsilon(self, mechanism: str, delta: float) -> float:
        """Epsilon spent at ``delta`` by ``mechanism`` ("prv"/"rdp"); infinite after a non-DP round."""
        return _epsilon(self._read(), mechanism, delta)

    def charge(self, *, run_id: int, server_round: int, planned: AccountantHistory | None,
               policy: SitePolicy, study_id: str = "", budget: StudyCalibration | None = None) -> Charge:
        """Record ``planned`` (``None`` for a non-DP round) before training, unless a limit refuses it.

        ``SiteRefusal`` naming the site and the rule, with nothing written, when a planned entry's noise is below
        ``policy.min_noise_multiplier``, when the projected epsilon (at the policy's delta, by the policy's
        accountant) would exceed ``policy.max_epsilon``, or, with a ``budget`` (the study's calibration), when the
        study's own rounds would exceed its target epsilon. ``CorruptLedgerError`` when the file is unreadable.
        """
        entry = LedgerRound(id=uuid.uuid4().hex, run_id=run_id, server_round=server_round, status="charged",
                            dp=planned is not None, planned=validated_history(planned or []),
                            counted=validated_history(planned or []), charged_at=_now(), study_id=study_id)
        request = f"round {server_round}"
        _check_noise(entry, policy, self.dataset.site, request)
        with self._locked():
            rounds, calibrations = self._read_all()
            projected = _epsilon([*rounds, entry], policy.accountant, policy.delta)
            if projected > policy.max_epsilon:
                spent = _epsilon(rounds, policy.accountant, policy.delta)
                raise SiteRefusal(
                    self.dataset.site, f"rule 'max-epsilon' ({policy.max_epsilon}) would be exceeded",
                    request=request,
                    detail=f"spent {spent:.3f}, after this round {projected:.3f} at delta {policy.delta}",
                )
            if budget is not None:
                _check_study_budget([r for r in rounds if r.study_id == budget.study_id], entry, budget,
                                    self.dataset.site, request)
            self._write([*rounds, entry], calibrations)
        return Charge(entry.id, merged_history([e for r in rounds for e in r.counted]))

    def settle(self, charge: Charge, actual: AccountantHistory) -> LedgerRound:
        """Replace the charged round's plan by ``actual`` steps, never counting fewer than planned."""
        with self._locked():
            rounds, calibrations = self._read_all()
            matches = [i for i, r in enumerate(rounds) if r.id == charge.round_id]
            if not matches:
                raise CorruptLedgerError(f"site {self.dataset.site}: privacy ledger", self.path,
                                         f"it has no charged round {charge.round_id}")
            index = matches[0]
            charged = rounds[index]
            actual = validated_history(actual)
            settled = LedgerRound(**{**asdict(charged), "status": "settled",
                                     "counted": _conservative(charged.planned, actual),
                                     "reconciled": _steps_by_params(actual) != _steps_by_params(charged.planned),
                                     "settled_at": _now()})
            rounds[index] = settled
            self._write(rounds, calibrations)
        return settled

    def _read(self) -> list[LedgerRound]:
        return self._read_all()[0]

    def _read_all(self) -> tuple[list[LedgerRound], list[StudyCalibration]]:
        if not self.path.exists():
            return [], []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw["format"] != LEDGER_FORMAT or raw["dataset"] != self.dataset.key:
                raise ValueError(f"format {raw['format']} / dataset {raw['dataset']} is not {LEDGER_FORMAT} / "
                                 f"{self.dataset.key}")
            return ([_round_from_json(r) for r in raw["rounds"]],
                    [StudyCalibration(**c) for c in raw.get("calibrations", [])])
        except (OSError, KeyError, TypeError, ValueError, PrivacyError) as exc:  # PrivacyError: a malformed history
            raise CorruptLedgerError(f"site {self.dataset.site}: privacy ledger", self.path, str(exc),
                                     "refusing to train without knowing the spend") from exc

    def _write(self, rounds: Sequence[LedgerRound], calibrations: Sequence[StudyCalibration]) -> None:
        document = {"format": LEDGER_FORMAT, "dataset": self.dataset.key, "site": self.dataset.site,
                    "data_dir": self.dataset.data_dir, "rounds": [asdict(r) for r in rounds],
                    "calibrations": [asdict(c) for c in calibrations]}
        atomic_write_text(self.path, json.dumps(document, indent=1) + "\n")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ledgers_in(directory: Path) -> list[PrivacyLedger]:
    """Every dataset's ledger in ``directory`` (sorted by site, then data folder)."""
    ledgers = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            dataset = DatasetId(key=str(raw["dataset"]), site=str(raw["site"]), data_dir=str(raw["data_dir"]))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise CorruptLedgerError("privacy ledger", path, str(exc)) from exc
        ledgers.append(PrivacyLedger(directory, dataset))
    return sorted(ledgers, key=lambda ledger: (ledger.dataset.site, ledger.dataset.data_dir))


def study_epsilon(rounds: Sequence[LedgerRound], budget: StudyCalibration) -> float:
    """Epsilon of ``budget``'s study: its own rounds among ``rounds``, replayed by its accountant at its delta."""
    return _epsilon([r for r in rounds if r.study_id == budget.study_id], budget.accountant, budget.delta)


def _check_noise(entry: LedgerRound, policy: SitePolicy, site: str, request: str) -> None:
    """``SiteRefusal`` when an entry of the round is noised less than ``policy.min_noise_multiplier``."""
    weakest = min((sigma for sigma, _, _ in entry.planned), default=math.inf)
    if weakest < policy.min_noise_multiplier:
        raise SiteRefusal(site, f"rule 'min-noise-multiplier' ({policy.min_noise_multiplier}): "
                                f"the round's noise multiplier is {weakest:.4g}", request=request)


def _check_study_budget(study_rounds: Sequence[LedgerRound], entry: LedgerRound, budget: StudyCalibration, site: str,
                        request: str) -> None:
    """``SiteRefusal`` when ``entry`` would push the study's rounds above its target (relative tolerance)."""
    projected = study_epsilon([*study_rounds, entry], budget)
    if projected > budget.target_epsilon * (1 + TARGET_TOLERANCE):
        spent = study_epsilon(study_rounds, budget)
        raise SiteRefusal(site, f"rule 'target-epsilon' ({budget.target_epsilon}) of the study would be exceeded",
                          request=request, detail=f"study {budget.study_id} spent {spent:.4f}, after this round "
                                                  f"{projected:.4f} at delta {budget.delta} ({budget.accountant})")


def _epsilon(rounds: Sequence[LedgerRound], mechanism: str, delta: float) -> float:
    if any(not r.dp for r in rounds):
        return math.inf
    return epsilon_spent(mechanism, merged_history([e for r in rounds for e in r.counted]), delta)


def _steps_by_params(history: Sequence[Sequence[float]]) -> dict[tuple[float, float], int]:
    steps: dict[tuple[float, float], int] = {}
    for sigma, rate, count in validated_history(history):
        steps[(sigma, rate)] = steps.get((sigma, rate), 0) + count
    return steps


def _conservative(planned: AccountantHistory, actual: AccountantHistory) -> AccountantHistory:
    """Per ``(noise, sample_rate)``, the larger of the planned and actual step counts."""
    plan, done = _steps_by_params(planned), _steps_by_params(actual)
    return [(sigma, rate, max(plan.get((sigma, rate), 0), done.get((sigma, rate), 0)))
            for sigma, rate in dict.fromkeys([*plan, *done])]


def _round_from_json(raw: dict[str, Any]) -> LedgerRound:
    return LedgerRound(**{**raw, "planned": validated_history(raw["planned"]),
                          "counted": validated_history(raw["counted"])})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
