"""The study schema: what every site's data holds and how it becomes model input, declared once by the operator.

A study ships one TOML file (``fedfusion study defaults --schema`` prints the synthetic cohort's as a worked
example; docs/SITE_DATA.md documents every key). It declares

- ``[study]``: the modalities the model fuses (any of ``wsi``, ``omics``, ``clinical``) and, optionally, the
  clinical-table column holding each patient's fixed split (``train`` / ``test`` / ``validation``);
- ``[[covariates]]``: the clinical branch's inputs, each ``numeric`` (study-fixed centre and scale, or a range,
  optionally logged), ``categorical`` (a fixed level list, one-hot; a level outside it is an error or maps to a
  declared ``other`` level) or ``binary`` (the values meaning 1 and 0), with a missing-value rule (``refuse``,
  or ``indicator``: a study-fixed fill plus a 0/1 column saying the value was missing);
- ``[[tasks]]``: one or several endpoints with loss weights: ``survival`` (time column and its unit, event column
  and what an event means, time-bin edges in that unit), ``classification`` (label column, fixed class list) and
  ``binary`` (label column, the values meaning positive and negative);
- ``[[omics]]``: any number of omics layers, each with its own gene panel (inline, or a file beside the schema),
  units (``tpm``, ``counts``, ``log2``, ``normalized``, ``binary``, ``log2-ratio``), the manifest column naming a
  patient's sample and the default table file name at a site;
- ``[radiology]``: the radiology modality (``fedfusion.data.radiology``): the scan modality (``CT``, ``MR``,
  ``PT``), the target voxel spacing, the crop (around the tumour mask, or the whole volume), the intensity
  normalisation (CT: a fixed Hounsfield window; MR/PT: per-volume z-score) and the study-fixed radiomics feature
  list, each feature with its own fixed centre and scale; or instead of radiomics (``encoder``) a frozen small
  3-D CNN applied to the crop resampled to a study-fixed voxel grid (``input-shape``).

Everything that shapes the model is fixed here (input sizes, normalisation constants, time bins), never computed
from a site's patients, so it stays outside the privacy accounting. The schema travels inside the study's run
config as canonical JSON (``StudySchema.to_json``), so it is part of the study's id and of the app hash the sites
approve. Loading validates everything and names the file and the key of any error.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from fedfusion.errors import ConfigError
from fedfusion.study.feature_scaling import ColumnScaling, TileScaling, read_feature_scaling

MODALITIES = ("wsi", "omics", "clinical", "radiology")
"""Model branches, in the order of the model's modality mask."""
COVARIATE_TYPES = ("numeric", "categorical", "binary")
MISSING_RULES = ("refuse", "indicator")
TASK_TYPES = ("survival", "classification", "binary")
TIME_UNITS = ("days", "months", "years")
OMICS_UNITS = ("tpm", "counts", "log2", "normalized", "binary", "log2-ratio")
"""``tpm`` / ``counts``: log2(x + 1) (counts first per million of the sample's library), z-scored within the
sample; ``log2``: already logged, z-scored within the sample; ``normalized``: used as given; ``binary``: 0/1 as
given (mutation calls); ``log2-ratio``: copy-number log2 ratios, clipped to [-2, 2] and divided by 0.5."""
SPLITS = ("train", "test", "validation")
DAYS_PER_UNIT = {"days": 1.0, "months": 365.25 / 12, "years": 365.25}
SCAN_MODALITIES = ("CT", "MR", "PT")
"""DICOM Modality values a radiology study may declare."""
RADIOLOGY_CROPS = ("mask", "volume")
RADIOMICS_FEATURES = (
    "shape:volume-ml", "shape:equivalent-radius-mm", "shape:surface-mm2", "shape:elongation", "shape:flatness",
    "shape:roundness", "intensity:mean", "intensity:sd", "intensity:median", "intensity:skewness",
    "intensity:kurtosis", "intensity:minimum", "intensity:maximum", "texture:gradient-mean", "texture:local-sd-mean",
    "texture:log-mean", "texture:log-sd",
)
"""Radiomics features a study may list (computed by ``fedfusion.data.radiology.radiomics`` with SimpleITK)."""
RADIOMICS = "radiomics"
CNN3D = "cnn3d"
"""The frozen small 3-D CNN of ``fedfusion.data.radiology.volume_encoder`` (seeded weights: a baseline only)."""
CNN3D_WIDTH = 32
"""Features of ``cnn3d``: its last block's channels, globally average-pooled."""
VOLUME_SAFETENSORS_PREFIX = f"safetensors:{CNN3D}:"
"""``safetensors:cnn3d:<sha256>``: the ``cnn3d`` architecture with weights from the site's hash-checked file."""
MIN_CNN_VOXELS, MAX_CNN_VOXELS = 8, 128
"""Bounds of each ``input-shape`` entry: the CNN halves the grid three times; 128^3 floats is 8 MiB a volume."""


@dataclass(frozen=True)
class Covariate:
    """One clinical covariate and how it becomes model input columns."""

    name: str
    """Its column in ``clinical.csv``."""
    type: str
    center: float = 0.0
    """numeric: (value - center) / scale (after the optional log)."""
    scale: float = 1.0
    log: bool = False
    """numeric: use log(value + 1) (values must be >= 0)."""
    levels: tuple[str, ...] = ()
    """categorical: the fixed level list (one-hot, in this order)."""
    other: str = ""
    """categorical: the level a value outside ``levels`` maps to (empty: such a value is an error)."""
    positive: tuple[str, ...] = ()
    """binary: the values meaning 1 (case-insensitive)."""
    negative: tuple[str, ...] = ()
    """binary: the values meaning 0."""
    missing: str = "refuse"
    fill: float = 0.0
    """With ``missing = "indicator"``: the input value of a missing numeric or binary covariate (after scaling)."""

    @property
    def width(self) -> int:
        """Input columns this covariate takes: one (numeric, binary) or one per level, plus a missing indicator."""
        base = len(self.levels) if self.type == "categorical" else 1
        return base + (1 if self.missing == "indicator" else 0)

    @property
    def column_names(self) -> tuple[str, ...]:
        """The names of its input columns, in order."""
        names = [f"{self.name}={level}" for level in self.levels] if self.type == "categorical" else [self.name]
        return tuple(names + ([f"{self.name} missing"] if self.missing == "indicator" else []))


@dataclass(frozen=True)
class Task:
    """One endpoint the model predicts, with its weight in the loss."""

    name: str
    type: str
    weight: float = 1.0
    time: str = ""
    """survival: the time column."""
    unit: str = ""
    """survival: the unit of the time column and of ``time_bins``."""
    event: str = ""
    """survival: the event column (1 = event observed, 0 = censored)."""
    event_meaning: str = ""
    """survival: what an event is (e.g. "death", "recurrence or death"); shown in reports."""
    time_bins: tuple[float, ...] = ()
    """survival: inner edges of the discrete-time bins, in ``unit``: (a, b) gives [0, a), [a, b), [b, inf)."""
    label: str = ""
    """classification / binary: the label column."""
    classes: tuple[str, ...] = ()
    """classification: the fixed class list (label order); binary: (negative, positive) names."""
    positive: tuple[str, ...] = ()
    """binary: the label values meaning positive (case-insensitive)."""
    negative: tuple[str, ...] = ()
    """binary: the label values meaning negative."""

    @property
    def is_survival(self) -> bool:
        """True for a survival endpoint."""
        return self.type == "survival"

    @property
    def num_outputs(self) -> int:
        """Width of the task's head: time bins for survival, classes otherwise."""
        return len(self.time_bins) + 1 if self.is_survival else len(self.classes)

    @property
    def columns(self) -> tuple[str, ...]:
        """The clinical-table columns the task reads."""
        return (self.time, self.event) if self.is_survival else (self.label,)


@dataclass(frozen=True)
class OmicsLayer:
    """One omics layer: its panel, units, where a site keeps it."""

    name: str
    units: str
    genes: tuple[str, ...]
    sample_column: str
    """The manifest column naming each patient's sample of this layer."""
    file: str
    """Default table file stem in a site folder (``<file>.csv``, ``.tsv``, ``.csv.gz``, ``.tsv.gz``, ``.parquet``);
    a site's ``tables.toml`` may name another file."""
    scaling: ColumnScaling | None = None
    """Study-fixed per-gene centre and scale after the units' transform (the schema's ``feature-scaling`` file;
    ``fedfusion.study.feature_scaling``); None: used as transformed."""

    @property
    def width(self) -> int:
        """Genes of the panel."""
        return len(self.genes)


@dataclass(frozen=True)
class RadiomicsFeature:
    """One radiomics feature of the study's list and its study-fixed scaling."""

    name: str
    """One of ``RADIOMICS_FEATURES``."""
    center: float = 0.0
    scale: float = 1.0
    """Model input = (value - center) / scale (after the optional log)."""
    log: bool = False
    """Use log(value + 1) (values must be >= 0)."""


@dataclass(frozen=True)
class RadiologySpec:
    """The study's radiology modality: which scans, their geometry and intensity rules, the feature list."""

    modality: str
    """``CT``, ``MR`` or ``PT``: every series must carry this DICOM Modality."""
    spacing: tuple[float, float, float]
    """Target voxel spacing in mm (x, y, z): every volume is resampled to it."""
    features: tuple[RadiomicsFeature, ...] = ()
    """``encoder = "radiomics"``: the study-fixed feature list (empty for a CNN encoder)."""
    crop: str = "mask"
    """``mask``: the tumour mask's bounding box plus ``margin`` (a mask per volume is required); ``volume``: the
    whole volume (the mask, when given, still selects the voxels the features describe)."""
    margin: float = 5.0
    """mm around the mask's bounding box kept by ``crop = "mask"``."""
    window: tuple[float, ...] = ()
    """CT: the Hounsfield window (low, high) intensities are clipped to and mapped onto [0, 1]. MR/PT: empty (each
    volume is z-scored over its own cropped region, never with statistics over the site's patients)."""
    volume_column: str = "radiology"
    """The manifest column naming each patient's volumes (';'-separated DICOM series folders or NIfTI files)."""
    mask_column: str = "radiology_mask"
    """The manifest column naming each volume's tumour mask (NIfTI label maps, in the same order)."""
    encoder: str = RADIOMICS
    """``radiomics`` (the ``features`` list), ``cnn3d`` (a frozen small 3-D CNN with fixed seeded weights: a
    baseline only) or ``safetensors:cnn3d:<sha256>`` (the same CNN with the weights of the site's copy of that
    file)."""
    input_shape: tuple[int, int, int] = (32, 32, 32)
    """CNN encoders: the voxel grid (x, y, z) the normalised crop is resampled to."""

    @property
    def width(self) -> int:
        """Input columns of the radiology branch: one per radiomics feature, or the CNN's pooled channels."""
        return len(self.features) if self.encoder == RADIOMICS else CNN3D_WIDTH


@dataclass(frozen=True)
class StudySchema:
    """A validated study schema (module doc)."""

    modalities: tuple[str, ...]
    covariates: tuple[Covariate, ...]
    tasks: tuple[Task, ...]
    omics: tuple[OmicsLayer, ...] = ()
    split_column: str = ""
    name: str = ""
    radiology: RadiologySpec | None = None
    wsi_scaling: TileScaling | None = None
    """Study-fixed per-column centre and scale of the tile features (the schema's ``feature-scaling`` file), with
    the encoder they were computed with and the file's name; None: the encoder's features as they are."""

    def __post_init__(self) -> None:
        _validate(self, "study schema")

    # ---- derived sizes ---------------------------------------------------------------------
    @property
    def clinical_dim(self) -> int:
        """Width of the clinical branch's input."""
        return sum(c.width for c in self.covariates)

    @property
    def clinical_columns(self) -> tuple[str, ...]:
        """Names of the clinical input columns, in order."""
        return tuple(name for c in self.covariates for name in c.column_names)

    @property
    def omics_input_dim(self) -> int:
        """Width of the omics branch's input: every layer's panel, then (with 2+ layers) a present flag each."""
        total = sum(layer.width for layer in self.omics)
        return total + (len(self.omics) if len(self.omics) > 1 else 0)

    @property
    def radiology_dim(self) -> int:
        """Width of the radiology branch's input (0 without a ``[radiology]`` section)."""
        return self.radiology.width if self.radiology is not None else 0

    @property
    def survival_tasks(self) -> tuple[Task, ...]:
        """The survival endpoints, in schema order."""
        return tuple(t for t in self.tasks if t.is_survival)

    @property
    def primary_task(self) -> Task:
        """The endpoint reported first: the first survival task, else the first task."""
        return (self.survival_tasks or self.tasks)[0]

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Every clinical-table column a task reads."""
        return tuple(column for task in self.tasks for column in task.columns)

    def with_modalities(self, modalities: Sequence[str]) -> StudySchema:
        """The same schema fusing only ``modalities`` (single-modality baselines)."""
        return replace(self, modalities=tuple(m for m in MODALITIES if m in modalities))

    def without_feature_scaling(self) -> StudySchema:
        """The same schema with the tile features and omics layers unscaled (the inputs a reference is taken of)."""
        return replace(self, wsi_scaling=None, omics=tuple(replace(layer, scaling=None) for layer in self.omics))

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what the run config carries and the study id hashes."""
        fields_ = asdict(self)
        for key in ("radiology", "wsi_scaling"):  # absent, so a schema without them keeps the JSON (and study id)
            if fields_[key] is None:                 # it had
                del fields_[key]
        for layer in fields_["omics"]:
            if layer["scaling"] is None:
                del layer["scaling"]
        return json.dumps(fields_, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StudySchema:
        """Parse ``to_json``'s output (the run config's ``schema`` value)."""
        return _schema_from_json(text)


@cache
def _schema_from_json(text: str) -> StudySchema:
    try:
        raw = json.loads(text)
        return StudySchema(
            modalities=tuple(raw["modalities"]),
            covariates=tuple(Covariate(**_tuples(c)) for c in raw["covariates"]),
            tasks=tuple(Task(**_tuples(t)) for t in raw["tasks"]),
            omics=tuple(OmicsLayer(**{**_tuples(o), "scaling": _scaling_from_json(o.get("scaling"))})
                        for o in raw["omics"]),
            split_column=str(raw.get("split_column", "")), name=str(raw.get("name", "")),
            radiology=_radiology_from_json(raw.get("radiology")),
            wsi_scaling=None if raw.get("wsi_scaling") is None else TileScaling.of(raw["wsi_scaling"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"study config 'schema': not a study schema ({type(exc).__name__}: {exc})") from exc


def _radiology_from_json(raw: Mapping[str, Any] | None) -> RadiologySpec | None:
    if raw is None:
        return None
    fields_ = _tuples(raw)
    fields_["features"] = tuple(RadiomicsFeature(**f) for f in raw["features"])
    return RadiologySpec(**fields_)


def _scaling_from_json(raw: Mapping[str, Any] | None) -> ColumnScaling | None:
    return None if raw is None else ColumnScaling.of(raw)


def _tuples(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


# ---- TOML -------------------------------------------------------------------------------------

_STUDY_KEYS = {"name", "modalities", "split-column", "feature-scaling"}
_COVARIATE_KEYS = {"name", "type", "center", "scale", "range", "log", "levels", "other", "positive", "negative",
                   "missing", "fill"}
_TASK_KEYS = {"name", "type", "weight", "time", "unit", "event", "event-meaning", "time-bins", "label", "classes",
              "positive", "negative"}
_OMICS_KEYS = {"name", "units", "genes", "panel", "sample-column", "file"}
_RADIOLOGY_KEYS = {"modality", "spacing", "crop", "margin", "window", "features", "volume-column", "mask-column",
                   "encoder", "input-shape"}
_FEATURE_KEYS = {"name", "center", "scale", "log"}


def load_schema(path: Path, *, feature_scaling: bool = True) -> StudySchema:
    """Read and validate a schema TOML file; ``ConfigError`` naming the file and key of any problem.

    Gene panels given as ``panel = "file.txt"`` are read relative to the schema file and embedded. Without
    ``feature_scaling`` the ``[study] feature-scaling`` file is not read (its inputs unscaled: what the command
    that writes the file reads, also when the file there is outdated).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"study schema {path}: file does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"study schema {path}: not valid TOML ({exc})") from exc
    return schema_from_toml(raw, path, feature_scaling=feature_scaling)


def feature_scaling_file(path: Path) -> Path | None:
    """The feature-scaling file a schema file names beside itself (``[study] feature-scaling``), or None; a copy of
    the schema elsewhere (``fedfusion synth`` writes one into each cohort) needs it beside it too."""
    try:
        name = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("study", {}).get("feature-scaling")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"study schema {path}: cannot be read ({type(exc).__name__})") from exc
    return Path(path).parent / name if isinstance(name, str) else None


def schema_from_toml(raw: Mapping[str, Any], path: Path, *, feature_scaling: bool = True) -> StudySchema:
    """Validate parsed schema TOML (``path`` names the file in messages and anchors relative panel files); the
    ``feature-scaling`` file is read unless ``feature_scaling`` is false."""
    where = f"study schema {path}"
    _keys(raw, {"study", "covariates", "tasks", "omics", "radiology"}, where)
    study = _table(raw.get("study", {}), f"{where}: [study]")
    _keys(study, _STUDY_KEYS, f"{where}: [study]")
    covariates = tuple(_covariate(c, f"{where}: covariates[{i}]")
                       for i, c in enumerate(_array(raw.get("covariates", []), f"{where}: covariates")))
    tasks = tuple(_task(t, f"{where}: tasks[{i}]")
                  for i, t in enumerate(_array(raw.get("tasks", []), f"{where}: tasks")))
    omics = tuple(_omics(o, f"{where}: omics[{i}]", path.parent)
                  for i, o in enumerate(_array(raw.get("omics", []), f"{where}: omics")))
    radiology = _radiology(raw["radiology"], f"{where}: [radiology]") if "radiology" in raw else None
    default_modalities = [m for m, present in (("wsi", False), ("omics", bool(omics)), ("clinical", bool(covariates)),
                                               ("radiology", radiology is not None)) if present]
    modalities = _strings(study.get("modalities", default_modalities), f"{where}: [study] modalities")
    wsi_scaling = None
    if "feature-scaling" in study and feature_scaling:
        scaling_file = path.parent / _str(study["feature-scaling"], f"{where}: [study] feature-scaling")
        try:
            scalings = read_feature_scaling(scaling_file, {layer.name: layer.genes for layer in omics})
        except ConfigError as exc:  # name the schema file and the key too, not only the vector file
            raise ConfigError(f"{where}: [study] feature-scaling: {exc}") from exc
        wsi_scaling = scalings.wsi
        omics = tuple(replace(layer, scaling=scalings.omics.get(layer.name)) for layer in omics)
    try:
        return StudySchema(modalities=modalities, covariates=covariates, tasks=tasks, omics=omics,
                           split_column=_str(study.get("split-column", ""), f"{where}: [study] split-column"),
                           name=_str(study.get("name", ""), f"{where}: [study] name"), radiology=radiology,
                           wsi_scaling=wsi_scaling)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("study schema", where, 1)) from exc


def _covariate(raw: object, where: str) -> Covariate:
    table = _table(raw, where)
    _keys(table, _COVARIATE_KEYS, _named(table, where))
    name = _str(_required(table, "name", where), f"{where} name")
    where = f"{where} ('{name}')"
    kind = _choice(_required(table, "type", where), COVARIATE_TYPES, f"{where} type")
    fields_: dict[str, Any] = {"name": name, "type": kind,
                               "missing": _choice(table.get("missing", "refuse"), MISSING_RULES, f"{where} missing")}
    allowed = {"numeric": {"center", "scale", "range", "log", "fill"}, "categorical": {"levels", "other"},
               "binary": {"positive", "negative", "fill"}}[kind] | {"name", "type", "missing"}
    wrong = sorted(set(table) - allowed)
    if wrong:
        raise ConfigError(f"{where}: keys {wrong} do not apply to a {kind} covariate")
    if kind == "numeric":
        if "range" in table:
            if "center" in table or "scale" in table:
                raise ConfigError(f"{where}: give either range or center/scale, not both")
            low, high = _numbers(table["range"], f"{where} range", length=2)
            if not high > low:
                raise ConfigError(f"{where} range: must be [low, high] with high > low, got {[low, high]}")
            fields_["center"], fields_["scale"] = low, high - low
        else:
            fields_["center"] = _number(_required(table, "center", where), f"{where} center")
            fields_["scale"] = _number(_required(table, "scale", where), f"{where} scale")
        fields_["log"] = _bool(table.get("log", False), f"{where} log")
        fields_["fill"] = _number(table.get("fill", 0.0), f"{where} fill")
    elif kind == "categorical":
        fields_["levels"] = _strings(_required(table, "levels", where), f"{where} levels")
        fields_["other"] = _str(table.get("other", ""), f"{where} other")
    else:
        fields_["positive"] = _strings(_required(table, "positive", where), f"{where} positive", scalar_ok=True)
        fields_["negative"] = _strings(_required(table, "negative", where), f"{where} negative", scalar_ok=True)
        fields_["fill"] = _number(table.get("fill", 0.0), f"{where} fill")
    return Covariate(**fields_)


def _task(raw: object, where: str) -> Task:
    table = _table(raw, where)
    _keys(table, _TASK_KEYS, _named(table, where))
    name = _str(_required(table, "name", where), f"{where} name")
    where = f"{where} ('{name}')"
    kind = _choice(_required(table, "type", where), TASK_TYPES, f"{where} type")
    allowed = {"survival": {"time", "unit", "event", "event-meaning", "time-bins"},
               "classification": {"label", "classes"},
               "binary": {"label", "positive", "negative"}}[kind] | {"name", "type", "weight"}
    wrong = sorted(set(table) - allowed)
    if wrong:
        raise ConfigError(f"{where}: keys {wrong} do not apply to a {kind} task")
    fields_: dict[str, Any] = {"name": name, "type": kind,
                               "weight": _number(table.get("weight", 1.0), f"{where} weight")}
    if kind == "survival":
        fields_["time"] = _str(_required(table, "time", where), f"{where} time")
        fields_["unit"] = _choice(_required(table, "unit", where), TIME_UNITS, f"{where} unit")
        fields_["event"] = _str(_required(table, "event", where), f"{where} event")
        fields_["event_meaning"] = _str(table.get("event-meaning", "event"), f"{where} event-meaning")
        fields_["time_bins"] = _numbers(_required(table, "time-bins", where), f"{where} time-bins")
    elif kind == "classification":
        fields_["label"] = _str(_required(table, "label", where), f"{where} label")
        fields_["classes"] = _strings(_required(table, "classes", where), f"{where} classes")
    else:
        fields_["label"] = _str(_required(table, "label", where), f"{where} label")
        fields_["positive"] = _strings(_required(table, "positive", where), f"{where} positive", scalar_ok=True)
        fields_["negative"] = _strings(_required(table, "negative", where), f"{where} negative", scalar_ok=True)
        fields_["classes"] = (fields_["negative"][0], fields_["positive"][0])
    return Task(**fields_)


def _omics(raw: object, where: str, base: Path) -> OmicsLayer:
    table = _table(raw, where)
    _keys(table, _OMICS_KEYS, _named(table, where))
    name = _str(_required(table, "name", where), f"{where} name")
    where = f"{where} ('{name}')"
    if ("genes" in table) == ("panel" in table):
        raise ConfigError(f"{where}: give the gene panel as genes = [...] or panel = \"file\", exactly one")
    if "genes" in table:
        genes = _strings(table["genes"], f"{where} genes")
    else:
        panel = base / _str(table["panel"], f"{where} panel")
        try:
            genes = read_panel_file(panel)
        except ConfigError as exc:  # name the schema file and the key too, not only the panel file
            raise ConfigError(f"{where} panel: {exc}") from exc
    return OmicsLayer(name=name, units=_choice(table.get("units", "tpm"), OMICS_UNITS, f"{where} units"),
                      genes=genes,
                      sample_column=_str(table.get("sample-column", f"{name}_sample"), f"{where} sample-column"),
                      file=_str(table.get("file", name), f"{where} file"))


def _radiology(raw: object, where: str) -> RadiologySpec:
    table = _table(raw, where)
    _keys(table, _RADIOLOGY_KEYS, where)
    modality = _str(_required(table, "modality", where), f"{where} modality").upper()
    if modality not in SCAN_MODALITIES:
        raise ConfigError(f"{where} modality: must be one of {list(SCAN_MODALITIES)}, got {table['modality']!r}")
    x, y, z = _numbers(_required(table, "spacing", where), f"{where} spacing", length=3)
    encoder = _str(table.get("encoder", RADIOMICS), f"{where} encoder")
    features = []
    listed = _required(table, "features", where) if encoder == RADIOMICS else table.get("features", [])
    for i, entry in enumerate(_array(listed, f"{where} features")):
        feature = _table(entry, f"{where} features[{i}]")
        _keys(feature, _FEATURE_KEYS, f"{where} features[{i}]")
        features.append(RadiomicsFeature(
            name=_str(_required(feature, "name", f"{where} features[{i}]"), f"{where} features[{i}] name"),
            center=_number(feature.get("center", 0.0), f"{where} features[{i}] center"),
            scale=_number(feature.get("scale", 1.0), f"{where} features[{i}] scale"),
            log=_bool(feature.get("log", False), f"{where} features[{i}] log")))
    return RadiologySpec(
        modality=modality, spacing=(x, y, z), features=tuple(features),
        crop=_choice(table.get("crop", "mask"), RADIOLOGY_CROPS, f"{where} crop"),
        margin=_number(table.get("margin", 5.0), f"{where} margin"),
        window=_numbers(table["window"], f"{where} window", length=2) if "window" in table else (),
        volume_column=_str(table.get("volume-column", "radiology"), f"{where} volume-column"),
        mask_column=_str(table.get("mask-column", "radiology_mask"), f"{where} mask-column"), encoder=encoder,
        input_shape=_shape(table.get("input-shape", [32, 32, 32]), f"{where} input-shape"))


def _shape(raw: object, where: str) -> tuple[int, int, int]:
    x, y, z = _numbers(raw, where, length=3)
    if not all(v == int(v) for v in (x, y, z)):
        raise ConfigError(f"{where}: must be three whole numbers of voxels, got {[x, y, z]}")
    return int(x), int(y), int(z)


def _named(table: Mapping[str, Any], where: str) -> str:
    """``where`` with the entry's name, when it has one (for messages before the name is validated)."""
    name = table.get("name")
    return f"{where} ('{name.strip()}')" if isinstance(name, str) else where


def read_panel_file(path: Path) -> tuple[str, ...]:
    """Gene symbols, one per line (blank lines ignored); ``ConfigError`` naming the file if missing."""
    try:
        return tuple(line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:  # absent, a directory, not readable, not text
        raise ConfigError(f"gene panel {path}: cannot be read ({type(exc).__name__})") from exc


# ---- validation -------------------------------------------------------------------------------

def _validate(schema: StudySchema, where: str) -> None:
    """Whole-schema rules (each part was checked as it was parsed; ``from_json`` relies on these too)."""
    unknown = sorted(set(schema.modalities) - set(MODALITIES))
    if not schema.modalities or unknown:
        raise ConfigError(f"{where}: [study] modalities must name some of {list(MODALITIES)}, "
                          f"got {list(schema.modalities)}")
    if "clinical" in schema.modalities and not schema.covariates:
        raise ConfigError(f"{where}: [study] modalities has 'clinical' but no [[covariates]] are declared")
    if "omics" in schema.modalities and not schema.omics:
        raise ConfigError(f"{where}: [study] modalities has 'omics' but no [[omics]] layers are declared")
    if "radiology" in schema.modalities and schema.radiology is None:
        raise ConfigError(f"{where}: [study] modalities has 'radiology' but no [radiology] section is declared")
    if schema.radiology is not None:
        _validate_radiology(schema.radiology, f"{where}: [radiology]")
    if not schema.tasks:
        raise ConfigError(f"{where}: declares no [[tasks]] (at least one endpoint)")
    if schema.split_column and schema.split_column in {"patient_id", *schema.label_columns}:
        raise ConfigError(f"{where}: [study] split-column '{schema.split_column}' is also a label column")
    leaking = sorted({c.name for c in schema.covariates} & {"patient_id", *schema.label_columns})
    if leaking:
        raise ConfigError(f"{where}: covariates {leaking} are also label columns (the model would see the labels)")
    for kind, names in (("covariates", [c.name for c in schema.covariates]), ("tasks", [t.name for t in schema.tasks]),
                        ("omics", [o.name for o in schema.omics]),
                        ("omics sample-column", [o.sample_column for o in schema.omics])):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"{where}: duplicate {kind} names {duplicates}")
    for covariate in schema.covariates:
        _validate_covariate(covariate, f"{where}: covariate '{covariate.name}'")
    for task in schema.tasks:
        _validate_task(task, f"{where}: task '{task.name}'")
    for layer in schema.omics:
        duplicates = sorted({g for g in layer.genes if layer.genes.count(g) > 1})
        if not layer.genes or duplicates:
            raise ConfigError(f"{where}: omics layer '{layer.name}' gene panel is empty or has duplicate genes "
                              f"{duplicates[:10]}")
        if layer.units not in OMICS_UNITS:
            raise ConfigError(f"{where}: omics layer '{layer.name}' units must be one of {list(OMICS_UNITS)}")
        if layer.scaling is not None and layer.scaling.width != layer.width:
            raise ConfigError(f"{where}: omics layer '{layer.name}' scaling has {layer.scaling.width} columns for "
                              f"{layer.width} genes")


def _validate_covariate(c: Covariate, where: str) -> None:
    if c.type not in COVARIATE_TYPES or c.missing not in MISSING_RULES:
        raise ConfigError(f"{where}: type must be one of {list(COVARIATE_TYPES)} and missing one of "
                          f"{list(MISSING_RULES)}")
    if c.type == "numeric" and not (math.isfinite(c.center) and math.isfinite(c.scale) and c.scale > 0):
        raise ConfigError(f"{where}: center must be finite and scale > 0, got center {c.center}, scale {c.scale}")
    if c.type == "categorical":
        if not c.levels or len(set(c.levels)) != len(c.levels):
            raise ConfigError(f"{where}: levels must be a non-empty list without duplicates, got {list(c.levels)}")
        if c.other and c.other not in c.levels:
            raise ConfigError(f"{where}: other = '{c.other}' must be one of its levels {list(c.levels)}")
    if c.type == "binary":
        overlap = {v.lower() for v in c.positive} & {v.lower() for v in c.negative}
        if not c.positive or not c.negative or overlap:
            raise ConfigError(f"{where}: positive and negative must be non-empty and disjoint, got "
                              f"{list(c.positive)} / {list(c.negative)}")
    if not math.isfinite(c.fill):
        raise ConfigError(f"{where}: fill must be a finite number")


def _validate_radiology(r: RadiologySpec, where: str) -> None:
    if r.modality not in SCAN_MODALITIES or r.crop not in RADIOLOGY_CROPS:
        raise ConfigError(f"{where}: modality must be one of {list(SCAN_MODALITIES)} and crop one of "
                          f"{list(RADIOLOGY_CROPS)}, got {r.modality!r}, {r.crop!r}")
    if len(r.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in r.spacing):
        raise ConfigError(f"{where}: spacing must be three numbers > 0 (mm), got {list(r.spacing)}")
    if not (math.isfinite(r.margin) and r.margin >= 0):
        raise ConfigError(f"{where}: margin must be a number >= 0 (mm), got {r.margin}")
    if r.modality == "CT" and not (len(r.window) == 2 and r.window[1] > r.window[0]):
        raise ConfigError(f"{where}: a CT study fixes its Hounsfield window: window = [low, high] with high > low, "
                          f"got {list(r.window)}")
    if r.modality != "CT" and r.window:
        raise ConfigError(f"{where}: window applies to CT only ({r.modality} volumes are z-scored per volume)")
    if not r.volume_column or r.volume_column == r.mask_column:
        raise ConfigError(f"{where}: volume-column and mask-column must be distinct non-empty names")
    if r.encoder != RADIOMICS:
        _validate_volume_encoder(r, where)
        return
    names = [f.name for f in r.features]
    unknown = sorted(set(names) - set(RADIOMICS_FEATURES))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if not names or unknown or duplicates:
        raise ConfigError(f"{where}: features must list some of {list(RADIOMICS_FEATURES)} once each; unknown "
                          f"{unknown}, duplicates {duplicates}")
    for f in r.features:
        if not (math.isfinite(f.center) and math.isfinite(f.scale) and f.scale > 0):
            raise ConfigError(f"{where}: feature '{f.name}' needs a finite center and scale > 0")


def _validate_volume_encoder(r: RadiologySpec, where: str) -> None:
    sha = r.encoder.removeprefix(VOLUME_SAFETENSORS_PREFIX)
    if r.encoder != CNN3D and not (r.encoder.startswith(VOLUME_SAFETENSORS_PREFIX) and len(sha) == 64
                                   and all(c in "0123456789abcdefABCDEF" for c in sha)):
        raise ConfigError(f"{where}: encoder must be '{RADIOMICS}', '{CNN3D}' or '{VOLUME_SAFETENSORS_PREFIX}<sha256 "
                          f"of the weights file>', got {r.encoder!r}")
    if r.features:
        raise ConfigError(f"{where}: features apply to encoder = '{RADIOMICS}' only; encoder '{r.encoder}' gives "
                          f"{CNN3D_WIDTH} features of its own")
    if len(r.input_shape) != 3 or not all(MIN_CNN_VOXELS <= n <= MAX_CNN_VOXELS for n in r.input_shape):
        raise ConfigError(f"{where}: input-shape must be three voxel counts from {MIN_CNN_VOXELS} to "
                          f"{MAX_CNN_VOXELS}, got {list(r.input_shape)}")


def _validate_task(t: Task, where: str) -> None:
    if not (math.isfinite(t.weight) and t.weight > 0):
        raise ConfigError(f"{where}: weight must be a number > 0, got {t.weight}")
    if t.is_survival:
        edges = t.time_bins
        if not edges or edges[0] <= 0 or any(b <= a for a, b in itertools.pairwise(edges)) \
                or not all(math.isfinite(e) for e in edges):
            raise ConfigError(f"{where}: time-bins must be positive and strictly increasing (in {t.unit}), "
                              f"got {list(edges)}")
        if t.unit not in TIME_UNITS or t.time == t.event:
            raise ConfigError(f"{where}: unit must be one of {list(TIME_UNITS)} and time and event distinct columns")
    elif len(t.classes) < 2 or len({c.lower() for c in t.classes}) != len(t.classes):
        raise ConfigError(f"{where}: classes must list at least two distinct classes (labels are read "
                          f"case-insensitively), got {list(t.classes)}")
    if t.type == "binary" and {v.lower() for v in t.positive} & {v.lower() for v in t.negative}:
        raise ConfigError(f"{where}: positive and negative values overlap")


# ---- small TOML readers -----------------------------------------------------------------------

def _keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")


def _table(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table, got {type(raw).__name__}")
    return raw


def _array(raw: object, where: str) -> list[object]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be an array of tables ([[...]]), got {type(raw).__name__}")
    return raw


def _required(table: Mapping[str, Any], key: str, where: str) -> object:
    if key not in table:
        raise ConfigError(f"{where}: missing key '{key}'")
    return table[key]


def _str(raw: object, where: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: must be a string, got {raw!r}")
    return raw.strip()


def _strings(raw: object, where: str, *, scalar_ok: bool = False) -> tuple[str, ...]:
    if scalar_ok and isinstance(raw, str | int | float) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str | int | float) and not isinstance(v, bool)
                                           for v in raw):
        raise ConfigError(f"{where}: must be a list of strings, got {raw!r}")
    return tuple(str(v).strip() for v in raw)


def _number(raw: object, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(float(raw)):
        raise ConfigError(f"{where}: must be a finite number, got {raw!r}")
    return float(raw)


def _numbers(raw: object, where: str, *, length: int | None = None) -> tuple[float, ...]:
    if not isinstance(raw, list) or (length is not None and len(raw) != length):
        raise ConfigError(f"{where}: must be a list of {length or 'some'} numbers, got {raw!r}")
    return tuple(_number(v, where) for v in raw)


def _bool(raw: object, where: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{where}: must be true or false, got {raw!r}")
    return raw


def _choice(raw: object, choices: Sequence[str], where: str) -> str:
    value = _str(raw, where).lower()
    if value not in choices:
        raise ConfigError(f"{where}: must be one of {list(choices)}, got {raw!r}")
    return value

