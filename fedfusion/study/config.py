"""The study configuration: exactly what defines a study, every knob that all sites of one study must share.

It travels in Flower's ``context.run_config`` (flat ``key = value`` pairs with dashes) beside the study's id and the
coordinator's runtime settings (``fedfusion.study.run_config``), is parsed here into a typed, validated
``StudyConfig`` and is hashed into the study's identity (``fedfusion.study.identity``). The dataclass defaults below
are the only defaults. Where and how a study runs is not here: the coordinator's results folder and round timeout
are ``CoordinatorSettings``; a site's device and paths are node facts (``fedfusion.site.node_context``).
Anything that shapes the model and would otherwise be computed from a site's patients (time-bin edges,
normalisation constants) is fixed here, so it stays outside the privacy accounting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from fedfusion.errors import ConfigError
from fedfusion.study.schema import StudySchema, Task, load_schema

FUSIONS = ("kronecker", "concat")
MODELS = ("fusion", "linear")
ACCOUNTANTS = ("prv", "rdp")
STAIN_NORMALIZATIONS = ("reinhard", "macenko", "none")
SECURE_AGGREGATION_MODES = ("auto", "on", "off")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
DP_MODES = ("local", "distributed")
AGGREGATIONS = ("mean", "median", "trimmed-mean", "krum", "multi-krum")
"""How a plain round combines the sites' updates (``fedfusion.coordinator.robust_aggregation``)."""
DP_RECIPES: dict[str, dict[str, Any]] = {
    "local": {},
    "distributed": {"dp_mode": "distributed", "sample_rate": 1.0, "num_server_rounds": 20,
                    "server_learning_rate": 1.0, "model": "linear"},
}
"""Named DP recipes (``--dp-recipe``): study keys set beneath the user's own. 'local' is the defaults below (local
DP-SGD at every site). 'distributed' is distributed DP's recipe measured best (docs/DP_RECIPE.md): every site's
training patients in each round (DP full-batch gradient descent of the federation), 20 rounds, server step 1.0, the
linear model on the schema's study-fixed input scaling;
the default of ``scripts/simulate``, opt-in elsewhere (its trust assumption: docs/THREAT_MODEL.md)."""
RUN_KEYS = frozenset({"study-id", "results-dir", "round-timeout"})
"""Run-config keys of a study's run that are not part of the study (``fedfusion.study.run_config``)."""

SYNTHETIC_SCHEMA_FILE = Path(__file__).with_name("synthetic_schema.toml")
"""The synthetic cohort's schema: the worked example, and a study's schema when it names none."""
RADIOGENOMICS_SCHEMA_FILE = Path(__file__).with_name("radiogenomics_schema.toml")
"""The radiogenomic synthetic cohort's schema (``fedfusion synth --radiology``): CT radiomics + omics + clinical."""


@cache
def default_schema_json() -> str:
    """The canonical JSON of ``SYNTHETIC_SCHEMA_FILE`` (the default of ``StudyConfig.schema``)."""
    return load_schema(SYNTHETIC_SCHEMA_FILE).to_json()


@dataclass(frozen=True)
class StudyConfig:
    """Typed view of a study's run config. Field ``foo_bar`` is run-config key ``foo-bar``."""

    num_server_rounds: int = 10
    min_sites: int = 2
    """Rounds proceed only when at least this many sites are connected and answer."""
    local_epochs: int = 1
    batch_size: int = 32
    """Expected patients per Poisson-sampled batch (Opacus' sample rate is 1 / ceil(patients / batch_size))."""
    learning_rate: float = 0.03
    """Each site's Adam step size (local DP and non-private training). The defaults above and below (10 rounds x 1
    local epoch, 0.03, concat fusion, target epsilon 8) are the local-DP recipe measured best on the default
    synthetic cohort (benchmarks/utility.py, README "Does federation pay?"): under DP-SGD a small fusion layer
    (concat: 6.9k parameters against 19.5k for Kronecker) and more, shorter rounds at a larger step beat the old
    5 x 2 epochs at 0.01 (held-out C-index 0.68 vs 0.62 over 5 seeds at epsilon 8)."""
    tiles_per_patient: int = 16
    """K: tiles sampled per patient per training step (the full bag is used at inference)."""
    dp: bool = True
    noise_multiplier: float = 1.5
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "prv"
    secure_aggregation: str = "auto"
    """'on', 'off' or 'auto' (on in a round with more than 2 sites): with it the coordinator learns only the
    patient-weighted average of the sites' updates (SecAgg+, ``fedfusion.secure_aggregation``)."""
    secure_aggregation_threshold: float = 0.6
    """Fraction of a round's sites that must stay to the end of secure aggregation (always more than half);
    with fewer the round fails safely, nothing is unmasked and the global model stays as it was."""
    fusion: str = "concat"
    schema: str = field(default_factory=default_schema_json)
    """The study schema (``fedfusion.study.schema``) as canonical JSON: covariates, tasks, omics layers and their
    panels, modalities, split column. Set from a TOML file (``--schema``); default: the synthetic cohort's."""
    tile_feature_dim: int = 64
    hidden_dim: int = 16
    dropout: float = 0.1
    test_fraction: float = 0.25
    seed: int = 0
    """The train/test split (a hash of patient id and seed): fixed, so every training seed is scored on the same
    held-out patients. With ``test-fraction`` it splits the sites of ``fedfusion simulate`` (written into each
    simulated site's policy); a deployed site splits by its own policy, never by these two keys."""
    training_seed: int = 0
    """Model initialisation, tile sampling and dropout (never DP noise, which each site draws from its OS)."""
    tile_size: int = 256
    target_mpp: float = 0.5
    max_background: float = 0.6
    stain_normalization: str = "none"
    """'reinhard' matches each slide's tissue colour to a study-fixed H&E target before the encoder (LAB statistics,
    per slide); 'macenko' re-mixes each slide's estimated H&E stains to study-fixed ones; 'none' skips it. Off by
    default: on the synthetic cohorts Reinhard made extraction about 4x slower and did not help the model."""
    allow_non_brightfield: bool = False
    """False: a slide with a dark background (a fluorescence or dark-field scan) is refused by ``site check`` and
    ``site prepare``, since tissue detection and the encoder expect brightfield (H&E) slides; true accepts them."""
    encoder: str = "random-conv-v1"
    # ---- server optimizer, FedProx and penalties (coordinator/server_optimizer.py, site/gradient_terms.py) ----
    server_optimizer: str = "fedavg"
    """How the coordinator applies the sites' patient-weighted mean update: 'fedavg' (global += server-learning-rate
    * mean update), 'fedavgm' (momentum), 'fedadam', 'fedyogi', 'fedadagrad' (Flower 1.41's update rules)."""
    server_learning_rate: float = 1.0
    """eta of the server optimizer (1.0 with 'fedavg' is plain FedAvg)."""
    server_momentum: float = 0.9
    """beta_1: momentum of 'fedavgm', first-moment decay of 'fedadam' and 'fedyogi'."""
    server_beta2: float = 0.99
    """beta_2: second-moment decay of 'fedadam' and 'fedyogi'."""
    server_tau: float = 1e-3
    """tau: adaptivity of 'fedadam', 'fedyogi', 'fedadagrad' (added to the root of the second moment)."""
    proximal_mu: float = 0.0
    """FedProx: each site's gradient gets mu * (w - w_global), added after DP privatization (0: off)."""
    l2_penalty: float = 0.0
    """Ridge: each site's gradient gets l2 * w on weight matrices, added after DP privatization; with distributed
    DP the coordinator adds it to the noisy mean gradient instead, a true ridge (0: off)."""
    l1_penalty: float = 0.0
    """Lasso: after each local step, weight matrices are soft-thresholded by learning-rate * l1 (0: off)."""
    # ---- privacy budget as input (target-epsilon) ------------------------------------------
    target_epsilon: float = 8.0
    """The whole study's epsilon (at ``delta``) per site: each site derives its noise multiplier once from its own
    training patients and the planned steps (``fedfusion.privacy.calibration``) and never exceeds it; 0 = off: every
    site uses ``noise-multiplier``."""
    # ---- distributed DP over secure aggregation (DP-FedSGD; fedfusion.site.distributed_dp) ----
    dp_mode: str = "local"
    """'local': each site runs DP-SGD on its own update; 'distributed' (opt-in): one round is one DP-SGD step of the
    whole federation, each site adds an integer noise share to its clipped gradient sum inside secure aggregation,
    and the coordinator's server optimizer steps on the noisy gradient (``server-learning-rate`` is the step size).
    The best private recipe measured (``DP_RECIPES["distributed"]``, ``--dp-recipe distributed``), under the trust
    assumption of docs/THREAT_MODEL.md; every round needs at least ``distributed-dp-tolerance`` + 2 sites through
    SecAgg+."""
    sample_rate: float = 0.3
    """Distributed mode: probability with which every site Poisson-samples each training patient every round
    (study-wide, so that every site's accounting entry is the same)."""
    distributed_dp_tolerance: int = 0
    """Distributed mode: t, the sites that may drop out of a round or collude with the coordinator while the
    central noise stays whole; a round needs n >= t + 2 sites and releases nothing with fewer than n - t."""
    # ---- small-cohort model and personalization --------------------------------------------
    model: str = "fusion"
    """'fusion' (modality encoders, fusion, one head per task) or 'linear' (``models/linear_survival.py``: one linear
    output layer per task on the concatenated inputs, the discrete-time analogue of a linear Cox model)."""
    personalization_epochs: int = 0
    """After the last round each site fine-tunes the final model's task heads on its own training patients for this
    many epochs (DP-SGD when dp, charged to its ledger) and reports their held-out metrics as ``personalized-*``
    beside the global model's; the personalized weights stay at the site. 0: off."""
    # ---- what the coordinator accepts from a site, and how it combines plain updates --------------
    # (coordinator/reply_validation.py, coordinator/robust_aggregation.py; docs/THREAT_MODEL.md "A hostile site")
    max_site_patients: int = 100_000
    """The largest patient count (``num-examples``, and the secure-aggregation weight) a site may declare; a reply
    outside [1, this] is rejected and named (it would otherwise buy the site any weight it likes in the mean)."""
    max_update_norm: float = 1000.0
    """The largest L2 norm of a plain train reply's update (trained minus global weights, all arrays together); a
    reply beyond it is rejected like a dropout. Honest updates measured far below: about 7 at the default recipe
    (local DP, 6.9k parameters), 12 with Kronecker fusion (19.5k), 44 without DP at 5 local epochs and learning rate
    0.1 (docs/THREAT_MODEL.md); raise it for a much larger model or many more local steps."""
    aggregation: str = "mean"
    """How a plain round combines the valid updates: 'mean' (patient-weighted FedAvg), 'median' (coordinate-wise),
    'trimmed-mean' (coordinate-wise, ``trim-fraction`` cut from each end), 'krum' (the one update closest to its
    n - f - 2 neighbours) or 'multi-krum' (the patient-weighted mean of the n - f best by Krum's score); anything
    but 'mean' needs 'secure-aggregation' = off (secure aggregation hides the single updates)."""
    trim_fraction: float = 0.2
    """'trimmed-mean': the fraction of sites cut from each end of every coordinate, in [0, 0.5)."""
    byzantine_sites: int = 1
    """'krum' and 'multi-krum': f, the sites that may send anything; a round needs at least 2f + 3 sites."""
    clip_update_norm: float = 0.0
    """Norm bounding of plain rounds: each valid update is scaled down to at most this L2 norm before it is
    aggregated (a reply above ``max-update-norm`` is still rejected, not clipped); 0 = off. Needs
    'secure-aggregation' = off."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Run-config keys this version does not know (kept, never silently dropped)."""

    def __post_init__(self) -> None:
        self._validate()

    # ---- derived values -------------------------------------------------------------------
    @property
    def spec(self) -> StudySchema:
        """The parsed study schema."""
        return StudySchema.from_json(self.schema)

    @property
    def modality_set(self) -> frozenset[str]:
        """The modalities the model fuses (the schema's)."""
        return frozenset(self.spec.modalities)

    @property
    def modalities(self) -> str:
        """The fused modalities as text, in model order (e.g. ``"wsi,omics"``)."""
        return ",".join(self.spec.modalities)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The schema's endpoints, in head order."""
        return self.spec.tasks

    def with_modalities(self, modalities: Iterable[str]) -> StudyConfig:
        """The same study fusing only ``modalities`` (single-modality baselines)."""
        return self.replace(schema=self.spec.with_modalities(tuple(modalities)).to_json())

    # ---- conversion -----------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> StudyConfig:
        """Parse the study's keys of Flower's ``context.run_config`` (dashed keys).

        Keys of the study's run that are not part of the study (``RUN_KEYS``: its id, the coordinator's settings)
        are skipped; any other unknown key goes to ``extra``.
        """
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if key in RUN_KEYS:
                continue
            if name not in known:
                extra[key] = value
                continue
            kwargs[name] = _coerce(key, value, known[name].type)
        return cls(**kwargs, extra=extra)

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """The dashed ``key -> value`` mapping Flower carries as ``run_config``."""
        out: dict[str, bool | int | float | str] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            out[f.name.replace("_", "-")] = getattr(self, f.name)
        return out

    def replace(self, **changes: Any) -> StudyConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ---- validation -----------------------------------------------------------------------
    def _validate(self) -> None:
        positive_ints = ("num_server_rounds", "min_sites", "local_epochs", "batch_size", "tiles_per_patient",
                         "tile_feature_dim", "hidden_dim", "tile_size")
        for name in positive_ints:
            if getattr(self, name) <= 0:
                raise ConfigError(f"study config '{_key(name)}' must be > 0, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"study config 'learning-rate' must be a finite number > 0, got {self.learning_rate}")
        if self.dp and not all(math.isfinite(v) and v > 0 for v in (self.noise_multiplier, self.max_grad_norm)):
            raise ConfigError("study config with dp = true needs 'noise-multiplier' and 'max-grad-norm' finite and "
                              f"> 0, got {self.noise_multiplier} and {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"study config 'delta' must be in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"study config 'accountant' must be one of {ACCOUNTANTS}, got '{self.accountant}'")
        if self.secure_aggregation not in SECURE_AGGREGATION_MODES:
            raise ConfigError(f"study config 'secure-aggregation' must be one of {SECURE_AGGREGATION_MODES}, "
                              f"got '{self.secure_aggregation}'")
        if not 0.5 < self.secure_aggregation_threshold <= 1:
            raise ConfigError("study config 'secure-aggregation-threshold' must be in (0.5, 1], "
                              f"got {self.secure_aggregation_threshold}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"study config 'fusion' must be one of {FUSIONS}, got '{self.fusion}'")
        wsi_scaling = StudySchema.from_json(self.schema).wsi_scaling  # a schema that does not parse fails here
        if wsi_scaling is not None and wsi_scaling.width != self.tile_feature_dim:
            raise ConfigError(f"study schema's feature-scaling 'wsi' has {wsi_scaling.width} columns but study "
                              f"config 'tile-feature-dim' is {self.tile_feature_dim}: the constants belong to the "
                              "encoder they were computed with; compute them for this one (fedfusion study "
                              "feature-scaling) or leave the schema's [study] feature-scaling out")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"study config 'test-fraction' must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.max_background <= 1:
            raise ConfigError(f"study config 'max-background' must be in [0, 1], got {self.max_background}")
        if self.stain_normalization not in STAIN_NORMALIZATIONS:
            raise ConfigError(f"study config 'stain-normalization' must be one of {STAIN_NORMALIZATIONS}, "
                              f"got '{self.stain_normalization}'")
        if self.target_mpp <= 0:
            raise ConfigError(f"study config 'target-mpp' must be > 0, got {self.target_mpp}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"study config 'dropout' must be in [0, 1), got {self.dropout}")
        if self.model not in MODELS:
            raise ConfigError(f"study config 'model' must be one of {MODELS}, got '{self.model}'")
        if self.personalization_epochs < 0:
            raise ConfigError(f"study config 'personalization-epochs' must be >= 0, got {self.personalization_epochs}")
        self._validate_optimization()
        self._validate_privacy_mode()
        self._validate_aggregation()

    def _validate_optimization(self) -> None:
        """The server optimizer's, FedProx's and the penalties' keys."""
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ConfigError(f"study config 'server-optimizer' must be one of {SERVER_OPTIMIZERS}, "
                              f"got '{self.server_optimizer}'")
        if not self.server_learning_rate > 0:
            raise ConfigError(f"study config 'server-learning-rate' must be > 0, got {self.server_learning_rate}")
        for name in ("server_momentum", "server_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"study config '{_key(name)}' must be in [0, 1), got {getattr(self, name)}")
        if not self.server_tau > 0:
            raise ConfigError(f"study config 'server-tau' must be > 0, got {self.server_tau}")
        for name in ("proximal_mu", "l2_penalty", "l1_penalty"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"study config '{_key(name)}' must be a finite number >= 0, got {value}")

    def _validate_privacy_mode(self) -> None:
        """The target epsilon and the distributed-DP keys."""
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon >= 0):
            raise ConfigError(f"study config 'target-epsilon' must be a finite number >= 0 (0 = off), "
                              f"got {self.target_epsilon}")
        if self.dp_mode not in DP_MODES:
            raise ConfigError(f"study config 'dp-mode' must be one of {DP_MODES}, got '{self.dp_mode}'")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"study config 'sample-rate' must be in (0, 1], got {self.sample_rate}")
        if self.distributed_dp_tolerance < 0:
            raise ConfigError(f"study config 'distributed-dp-tolerance' must be >= 0, "
                              f"got {self.distributed_dp_tolerance}")
        if self.dp_mode != "distributed":
            return
        if not self.dp or self.secure_aggregation == "off":
            raise ConfigError("study config 'dp-mode' = distributed needs 'dp' = true and 'secure-aggregation' "
                              f"on or auto, got dp = {self.dp}, secure-aggregation = {self.secure_aggregation}")
        if self.min_sites < self.distributed_dp_tolerance + 2:
            raise ConfigError(f"study config 'dp-mode' = distributed needs 'min-sites' >= "
                              f"'distributed-dp-tolerance' + 2, got {self.min_sites} and "
                              f"{self.distributed_dp_tolerance}")


    def _validate_aggregation(self) -> None:
        """The reply bounds and the robust aggregation keys; robust rules only where the coordinator sees updates."""
        if self.max_site_patients < 1:
            raise ConfigError(f"study config 'max-site-patients' must be >= 1, got {self.max_site_patients}")
        if not self.max_update_norm > 0:
            raise ConfigError(f"study config 'max-update-norm' must be > 0, got {self.max_update_norm}")
        if not (math.isfinite(self.clip_update_norm) and 0 <= self.clip_update_norm <= self.max_update_norm):
            raise ConfigError(f"study config 'clip-update-norm' must be in [0, max-update-norm = "
                              f"{self.max_update_norm}] (0 = off), got {self.clip_update_norm}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"study config 'aggregation' must be one of {AGGREGATIONS}, got '{self.aggregation}'")
        if not 0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"study config 'trim-fraction' must be in [0, 0.5), got {self.trim_fraction}")
        if self.byzantine_sites < 0:
            raise ConfigError(f"study config 'byzantine-sites' must be >= 0, got {self.byzantine_sites}")
        robust = [f"aggregation = {self.aggregation}"] if self.aggregation != "mean" else []
        robust += [f"clip-update-norm = {self.clip_update_norm}"] if self.clip_update_norm > 0 else []
        if not robust:
            return
        if self.secure_aggregation != "off" or self.dp_mode == "distributed":
            raise ConfigError(f"study config {' and '.join(robust)} needs 'secure-aggregation' = off and 'dp-mode' = "
                              f"local, got secure-aggregation = {self.secure_aggregation}, dp-mode = {self.dp_mode}: "
                              "secure aggregation shows the coordinator only the sum of the updates, so no rule can "
                              "look at one site's update (there, a site's influence is bounded by its weight only)")
        needed = {"median": 3, "trimmed-mean": math.ceil(1 / self.trim_fraction - 1e-9) if self.trim_fraction else 0,
                  "krum": 2 * self.byzantine_sites + 3, "multi-krum": 2 * self.byzantine_sites + 3}
        if self.min_sites < needed.get(self.aggregation, 0):
            raise ConfigError(f"study config 'aggregation' = {self.aggregation} needs 'min-sites' >= "
                              f"{needed[self.aggregation]} (median: 3; trimmed-mean: 1 / trim-fraction, to cut at "
                              f"least one site per end; krum: 2 * byzantine-sites + 3), got {self.min_sites}")


def local_dp_recipe(study: StudyConfig) -> StudyConfig:
    """How a site trains alone beside ``study``: a distributed-DP study (which has no local-DP recipe of its own) with
    the keys of the DP recipes back at their defaults, the local-DP recipe; any other study as it is."""
    if study.dp_mode != "distributed":
        return study
    keys = {key for recipe in DP_RECIPES.values() for key in recipe}
    return study.replace(**{f.name: f.default for f in fields(StudyConfig) if f.name in keys})


def _key(name: str) -> str:
    return name.replace("_", "-")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a run-config value to the field's type, with a message naming the key."""
    type_name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError(f"not a boolean: {value!r}")
        if type_name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"not an integer: {value!r}")
            return int(value)
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError(f"not a number: {value!r}")
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"study config '{key}': {exc}") from exc
