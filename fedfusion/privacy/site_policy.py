"""A site's own privacy policy: limits the coordinator's study config cannot override.

The site admin writes a TOML file (node config key ``policy-file``; in simulation ``<site_dir>/privacy_policy.toml``
when present). Every key is optional; a missing key takes the default below::

    max-epsilon = 50.0                 # lifetime epsilon of one dataset, across all rounds, runs and studies
    delta = 1e-5                       # the largest delta a study may use; epsilon is accounted at this delta
    accountant = "prv"                 # "prv" or "rdp": how the site accounts its ledger (not the study's choice)
    min-noise-multiplier = 0.5         # also the floor of the noise a site calibrates to a study's target epsilon
    max-target-epsilon = 10.0          # the largest per-study target epsilon (study key target-epsilon) accepted
    max-grad-norm = 10.0               # the largest clipping norm a study may use
    dp-mandatory = true                # refuse studies with dp = false
    allowed-modalities = ["wsi", "omics", "clinical"]   # the data kinds a study may use
    allowed-fusions = ["kronecker", "concat"]
    keep-egress-payloads = false       # also keep a copy of every serialized outgoing message (audit)
    secure-aggregation-mandatory = false   # refuse studies, and train rounds, without secure aggregation
    min-eval-patients = 20             # refuse an evaluation on fewer held-out patients
    max-evaluations-per-round = 1      # evaluations of one study's round (the same model asked again is replayed)
    max-evaluations-per-study = 200    # evaluations of one study (study id), counted beside the ledger
    eval-metric-noise = 0.0            # Laplace noise on evaluate metrics, in units of one patient's share; 0 = off
    split-seed = 0                     # the site's own train/test split: hash of (split-seed, patient id) ...
    test-fraction = 0.25               # ... below test-fraction is held out (the study's seed and test-fraction
                                       #     do not move it)
    use-split-column = true            # a study schema's split column (the site's own clinical.csv column) applies

The evaluation keys keep the site in control of what evaluation reveals (docs/THREAT_MODEL.md, "Evaluation under the
site's control"): the coordinator cannot shrink the held-out set (the split is the site's), cannot evaluate on a
handful of patients, and cannot ask for many evaluations of crafted models.

The defaults are permissive enough for the synthetic cohorts' simulations (a default study spends its target
epsilon of 8, the end-to-end test about 33); a hospital writes its own file. A non-DP round has infinite epsilon,
so with ``dp-mandatory = false`` it is still refused unless ``max-epsilon = inf``.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedfusion.data.patient_split import PatientSplit
from fedfusion.errors import ConfigError, SiteRefusal
from fedfusion.study.config import ACCOUNTANTS, FUSIONS, StudyConfig
from fedfusion.study.schema import MODALITIES

POLICY_FILE_NAME = "privacy_policy.toml"
"""The policy file a simulated site reads from its own data folder."""
SECURE_AGGREGATION_RULE = "rule 'secure-aggregation-mandatory' (true)"
"""How a refusal names the rule (also used for a train round that asks plain aggregation)."""


@dataclass(frozen=True)
class SitePolicy:
    """The site's limits. Field ``foo_bar`` is TOML key ``foo-bar``."""

    max_epsilon: float = 50.0
    delta: float = 1e-5
    accountant: str = "prv"
    min_noise_multiplier: float = 0.5
    max_target_epsilon: float = 10.0
    max_grad_norm: float = 10.0
    dp_mandatory: bool = True
    allowed_modalities: tuple[str, ...] = MODALITIES
    allowed_fusions: tuple[str, ...] = FUSIONS
    keep_egress_payloads: bool = False
    secure_aggregation_mandatory: bool = False
    min_eval_patients: int = 20
    max_evaluations_per_round: int = 1
    max_evaluations_per_study: int = 200
    eval_metric_noise: float = 0.0
    split_seed: int = 0
    test_fraction: float = 0.25
    use_split_column: bool = True
    source: str = "built-in default"
    """Where the policy came from (a file path or the built-in default); never sent."""

    @property
    def split(self) -> PatientSplit:
        """The site's own train/test split (``split-seed``, ``test-fraction``, ``use-split-column``)."""
        return PatientSplit(self.split_seed, self.test_fraction, self.use_split_column)

    def violations(self, study: StudyConfig) -> list[str]:
        """Each rule ``study`` breaks, as ``"rule 'name' (limit): study asks ..."`` (empty when acceptable).

        A study with a target epsilon is checked against ``max-target-epsilon`` here; its noise is the site's own
        calibration, checked against ``min-noise-multiplier`` when a round is charged (``PrivacyLedger.charge``).
        """
        broken: list[str] = []
        if not study.dp:
            if self.dp_mandatory:
                broken.append("rule 'dp-mandatory' (true): study asks dp = false")
        else:
            if study.target_epsilon > self.max_target_epsilon:
                broken.append(f"rule 'max-target-epsilon' ({self.max_target_epsilon}): "
                              f"study asks target-epsilon = {study.target_epsilon}")
            if study.target_epsilon == 0 and study.noise_multiplier < self.min_noise_multiplier:
                broken.append(f"rule 'min-noise-multiplier' ({self.min_noise_multiplier}): "
                              f"study asks noise-multiplier = {study.noise_multiplier}")
            if study.max_grad_norm > self.max_grad_norm:
                broken.append(f"rule 'max-grad-norm' ({self.max_grad_norm}): "
                              f"study asks max-grad-norm = {study.max_grad_norm}")
            if study.delta > self.delta:
                broken.append(f"rule 'delta' ({self.delta}): study asks delta = {study.delta}")
        extra_modalities = sorted(study.modality_set - set(self.allowed_modalities))
        if extra_modalities:
            broken.append(f"rule 'allowed-modalities' ({list(self.allowed_modalities)}): "
                          f"study asks modalities {extra_modalities}")
        if study.fusion not in self.allowed_fusions:
            broken.append(f"rule 'allowed-fusions' ({list(self.allowed_fusions)}): study asks fusion = {study.fusion}")
        if self.secure_aggregation_mandatory and study.secure_aggregation == "off":
            broken.append(f"{SECURE_AGGREGATION_RULE}: study asks secure-aggregation = off")
        return broken

    def check(self, study: StudyConfig, site_name: str) -> None:
        """``SiteRefusal`` naming the site and every broken rule if the site must refuse ``study``."""
        broken = self.violations(study)
        if broken:
            raise SiteRefusal(site_name, "; ".join(broken), request="the study under its privacy policy")


def load_policy(path: Path | None) -> SitePolicy:
    """The policy in TOML file ``path``, or the built-in default for ``None``; ``ConfigError`` naming the file."""
    if path is None:
        return SitePolicy()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"privacy policy {path}: file does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"privacy policy {path}: not valid TOML ({exc})") from exc
    known = {f.name.replace("_", "-"): f for f in fields(SitePolicy) if f.name != "source"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"privacy policy {path}: unknown keys {unknown} (known: {sorted(known)})")
    values = {known[key].name: _typed(path, key, value, getattr(SitePolicy, known[key].name))
              for key, value in raw.items()}
    policy = SitePolicy(**values, source=str(path))
    _validate(path, policy)
    return policy


def policy_to_toml(policy: SitePolicy) -> str:
    """``policy`` as the TOML file ``load_policy`` reads back equal (every key written; ``source`` is not a key)."""
    lines = []
    for f in fields(SitePolicy):
        if f.name != "source":
            lines.append(f"{f.name.replace('_', '-')} = {_toml_value(getattr(policy, f.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(item) for item in value) + "]"
    return json.dumps(value)


def _typed(path: Path, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the key's default; ``ConfigError`` naming the file and key otherwise."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"privacy policy {path}: '{key}' must be like {default!r}, got {value!r}")
    return value


def _validate(path: Path, policy: SitePolicy) -> None:
    problems = []
    if not (policy.max_epsilon >= 0 and not math.isnan(policy.max_epsilon)):
        problems.append(f"'max-epsilon' must be >= 0 (inf allowed), got {policy.max_epsilon}")
    if not 0 < policy.delta < 1:
        problems.append(f"'delta' must be in (0, 1), got {policy.delta}")
    if policy.accountant not in ACCOUNTANTS:
        problems.append(f"'accountant' must be one of {ACCOUNTANTS}, got '{policy.accountant}'")
    if not (math.isfinite(policy.min_noise_multiplier) and policy.min_noise_multiplier >= 0):
        problems.append(f"'min-noise-multiplier' must be a finite number >= 0, got {policy.min_noise_multiplier}")
    if not (policy.max_target_epsilon >= 0 and not math.isnan(policy.max_target_epsilon)):
        problems.append(f"'max-target-epsilon' must be >= 0 (inf allowed), got {policy.max_target_epsilon}")
    if not policy.max_grad_norm > 0:
        problems.append(f"'max-grad-norm' must be > 0, got {policy.max_grad_norm}")
    for key in ("min-eval-patients", "max-evaluations-per-round", "max-evaluations-per-study"):
        if getattr(policy, key.replace("-", "_")) < 0:
            problems.append(f"'{key}' must be >= 0, got {getattr(policy, key.replace('-', '_'))}")
    if not (math.isfinite(policy.eval_metric_noise) and policy.eval_metric_noise >= 0):
        problems.append(f"'eval-metric-noise' must be a finite number >= 0 (0 = off), got {policy.eval_metric_noise}")
    if not 0 < policy.test_fraction < 1:
        problems.append(f"'test-fraction' must be in (0, 1), got {policy.test_fraction}")
    if set(policy.allowed_modalities) - set(MODALITIES):
        problems.append(f"'allowed-modalities' must name some of {MODALITIES}, got {list(policy.allowed_modalities)}")
    if set(policy.allowed_fusions) - set(FUSIONS):
        problems.append(f"'allowed-fusions' must name some of {FUSIONS}, got {list(policy.allowed_fusions)}")
    if problems:
        raise ConfigError(f"privacy policy {path}: " + "; ".join(problems))
