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
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedfusion.errors import ConfigError

MODALITIES = ("wsi", "omics", "clinical")
FUSIONS = ("kronecker", "concat")
ACCOUNTANTS = ("prv", "rdp")
STAIN_NORMALIZATIONS = ("reinhard", "macenko", "none")
SECURE_AGGREGATION_MODES = ("auto", "on", "off")
RUN_KEYS = frozenset({"study-id", "results-dir", "round-timeout"})
"""Run-config keys of a study's run that are not part of the study (``fedfusion.study.run_config``)."""

# Study-fixed clinical normalisation (public reference values, not site statistics).
AGE_MEAN_YEARS = 60.0
AGE_SCALE_YEARS = 10.0
CLINICAL_COVARIATES = ("age_z", "sex")
"""The clinical branch's inputs, in order: age z-scored with the constants above, sex (0 female, 1 male)."""
STUDY_SUBTYPES = ("basal", "her2", "luminal")
"""The subtype classes of the classification head, in label order."""


@dataclass(frozen=True)
class StudyConfig:
    """Typed view of a study's run config. Field ``foo_bar`` is run-config key ``foo-bar``."""

    num_server_rounds: int = 5
    min_sites: int = 2
    """Rounds proceed only when at least this many sites are connected and answer."""
    local_epochs: int = 2
    batch_size: int = 32
    """Expected patients per Poisson-sampled batch (Opacus' sample rate is 1 / ceil(patients / batch_size))."""
    learning_rate: float = 0.01
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
    fusion: str = "kronecker"
    modalities: str = "wsi,omics,clinical"
    time_bins: str = "12,24,36,60"
    """Inner edges (months) of the discrete-time survival bins: '12,24' gives [0,12), [12,24), [24,inf)."""
    tile_feature_dim: int = 64
    omics_dim: int = 200
    cnv_dim: int = 40
    """Genes of the study's copy-number panel (a second omics layer, fed to the omics branch with the RNA-seq
    panel; 0: no copy-number layer)."""
    hidden_dim: int = 16
    dropout: float = 0.1
    test_fraction: float = 0.25
    seed: int = 0
    """The train/test split (a hash of patient id and seed): fixed, so every training seed is scored on the same
    held-out patients."""
    training_seed: int = 0
    """Model initialisation, tile sampling and dropout (never DP noise, which each site draws from its OS)."""
    tile_size: int = 256
    target_mpp: float = 0.5
    max_background: float = 0.6
    stain_normalization: str = "none"
    """'reinhard' matches each slide's tissue colour to a study-fixed H&E target before the encoder (LAB statistics,
    per slide); 'macenko' re-mixes each slide's estimated H&E stains to study-fixed ones; 'none' skips it. Off by
    default: on the synthetic cohorts Reinhard made extraction about 4x slower and did not help the model."""
    encoder: str = "random-conv-v1"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Run-config keys this version does not know (kept, never silently dropped)."""

    def __post_init__(self) -> None:
        self._validate()

    # ---- derived values -------------------------------------------------------------------
    @property
    def modality_set(self) -> frozenset[str]:
        """The modalities the model uses."""
        return frozenset(m.strip() for m in self.modalities.split(",") if m.strip())

    @property
    def time_bin_edges(self) -> tuple[float, ...]:
        """Inner bin edges in months, strictly increasing."""
        return tuple(float(x) for x in self.time_bins.split(",") if x.strip())

    @property
    def omics_input_dim(self) -> int:
        """Width of the omics branch's input: RNA-seq panel, then copy-number panel and one present-flag per layer."""
        return self.omics_dim + (self.cnv_dim + 2 if self.cnv_dim else 0)

    @property
    def clinical_dim(self) -> int:
        """Width of the clinical branch's input (``CLINICAL_COVARIATES``)."""
        return len(CLINICAL_COVARIATES)

    @property
    def num_subtypes(self) -> int:
        """Classes of the subtype head (``STUDY_SUBTYPES``)."""
        return len(STUDY_SUBTYPES)

    @property
    def num_time_bins(self) -> int:
        """Number of discrete survival intervals (inner edges + 1)."""
        return len(self.time_bin_edges) + 1

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
                         "tile_feature_dim", "omics_dim", "hidden_dim", "tile_size")
        for name in positive_ints:
            if getattr(self, name) <= 0:
                raise ConfigError(f"study config '{_key(name)}' must be > 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"study config 'learning-rate' must be > 0, got {self.learning_rate}")
        if self.dp and (self.noise_multiplier <= 0 or self.max_grad_norm <= 0):
            raise ConfigError("study config with dp = true needs 'noise-multiplier' > 0 and 'max-grad-norm' > 0")
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
        unknown = self.modality_set - set(MODALITIES)
        if not self.modality_set or unknown:
            raise ConfigError(f"study config 'modalities' must name some of {MODALITIES}, got '{self.modalities}'")
        try:
            edges = self.time_bin_edges
        except ValueError as exc:
            raise ConfigError(f"study config 'time-bins' must be comma-separated numbers: {exc}") from exc
        if not edges or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] <= 0:
            raise ConfigError("study config 'time-bins' must be positive and strictly increasing, "
                              f"got '{self.time_bins}'")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"study config 'test-fraction' must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.max_background <= 1:
            raise ConfigError(f"study config 'max-background' must be in [0, 1], got {self.max_background}")
        if self.stain_normalization not in STAIN_NORMALIZATIONS:
            raise ConfigError(f"study config 'stain-normalization' must be one of {STAIN_NORMALIZATIONS}, "
                              f"got '{self.stain_normalization}'")
        if self.target_mpp <= 0:
            raise ConfigError(f"study config 'target-mpp' must be > 0, got {self.target_mpp}")
        if self.cnv_dim < 0:
            raise ConfigError(f"study config 'cnv-dim' must be >= 0, got {self.cnv_dim}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"study config 'dropout' must be in [0, 1), got {self.dropout}")


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
