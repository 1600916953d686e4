"""Study-fixed input scaling of the tile features and the omics layers: per-column centre and scale.

The schema's ``[study] feature-scaling = "file.json"`` names a file beside the schema holding, per modality, one
centre and one scale per input column; the model's input is ``(value - center) / scale``, applied where a site
builds its patient records (``fedfusion.data.cohort``), for every model, in simulation and deployment alike. The
vectors are embedded in the schema (so in the study's id and the app hash the sites approve), like gene panels.

They must come from outside the study's patients (``fedfusion study feature-scaling`` on a reference cohort:
public data, or a synthetic cohort of a seed no study uses): a constant computed from a site's own patients would
make every patient's input depend on the other patients, which DP-SGD's per-patient sensitivity does not cover.

The file (JSON)::

    {"reference": "what it was computed from",
     "wsi": {"center": [...], "scale": [...],                        # tile-feature-dim columns
             "encoder": {"name": ..., "architecture": ..., "feature-dim": ..., "weights": ...}},
     "omics": {"<layer>": {"genes": [...], "center": [...], "scale": [...]}}}   # the layer's panel, in order

Every part is optional; a modality or layer without one is used as it is (identity). Tile features depend on the
frozen tile encoder, so ``wsi`` names the encoder its constants were computed with (``EncoderIdentity``: the
study's ``encoder`` value, the architecture, the feature count and the weights: ``seed:<n>`` of a fixed random
initialisation or ``sha256:<hex>`` of a weights file); a site refuses to apply them to another encoder's features
(``TileScaling.check_encoder``), and a file without it (written before it was recorded) is refused on reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedfusion.errors import ConfigError

FILE_KEYS = {"reference", "wsi", "omics"}
"""Top-level keys of a feature-scaling file."""
ENCODER_KEYS = {"name": str, "architecture": str, "feature-dim": int, "weights": str}
"""Keys of the ``wsi.encoder`` object of a feature-scaling file, with their JSON types."""
RECOMPUTE_COMMAND = ("fedfusion study feature-scaling --cohort REFERENCE --out FILE --set encoder=<the study's "
                     "encoder> [--encoder-file <its weights file>]")
"""The command that (re)computes a feature-scaling file, as error messages name it."""


@dataclass(frozen=True)
class ColumnScaling:
    """Study-fixed per-column scaling: model input = (value - center) / scale."""

    center: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.center) != len(self.scale) or not self.center:
            raise ConfigError(f"feature scaling: center and scale must be non-empty and of one length, got "
                              f"{len(self.center)} and {len(self.scale)}")
        if not all(math.isfinite(c) for c in self.center) or not all(math.isfinite(s) and s > 0
                                                                     for s in self.scale):
            raise ConfigError("feature scaling: every center must be finite and every scale finite and > 0")

    @property
    def width(self) -> int:
        """Columns scaled."""
        return len(self.center)

    def apply(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(values - center) / scale`` over the last axis, as float32."""
        center = np.asarray(self.center, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        return ((values - center) / scale).astype(np.float32)

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> ColumnScaling:
        """From its JSON form (``center``, ``scale`` lists)."""
        return cls(center=tuple(float(v) for v in raw["center"]), scale=tuple(float(v) for v in raw["scale"]))


@dataclass(frozen=True)
class EncoderIdentity:
    """The frozen tile encoder that produced tile features (``TileEncoder.identity`` of the encoder loaded)."""

    name: str
    """The study's ``encoder`` value (also what the feature cache keys an entry by)."""
    architecture: str
    feature_dim: int
    weights: str
    """``seed:<n>`` for fixed random weights, ``sha256:<hex>`` of the weights file for weights from a file."""

    def describe(self) -> str:
        """One line naming every part, for messages."""
        return f"'{self.name}' ({self.architecture}, {self.feature_dim} features, weights {self.weights})"

    def to_file_json(self) -> dict[str, str | int]:
        """The form a feature-scaling file holds (``ENCODER_KEYS``)."""
        return {"name": self.name, "architecture": self.architecture, "feature-dim": self.feature_dim,
                "weights": self.weights}

    @classmethod
    def of_file_json(cls, raw: Mapping[str, Any]) -> EncoderIdentity:
        """From a feature-scaling file's form (``to_file_json``)."""
        return cls(name=str(raw["name"]), architecture=str(raw["architecture"]), feature_dim=int(raw["feature-dim"]),
                   weights=str(raw["weights"]))


@dataclass(frozen=True)
class TileScaling(ColumnScaling):
    """The tile features' scaling, the encoder whose features its constants were computed from, and the name of
    the feature-scaling file it came from (for messages at a site, which never sees the file itself)."""

    encoder: EncoderIdentity | None = None
    """None only in a schema JSON made before files recorded it: refused by ``check_encoder``."""
    file: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder is not None and self.encoder.feature_dim != self.width:
            raise ConfigError(f"feature scaling: {self.width} tile-feature columns, but the encoder they were "
                              f"computed with, {self.encoder.describe()}, gives {self.encoder.feature_dim}")

    def check_encoder(self, found: EncoderIdentity) -> None:
        """``ConfigError`` unless ``found`` (the encoder whose tile features these constants are about to scale)
        is the one the constants were computed with: another encoder's features would be scaled wrongly, and
        training would still run and report a C-index."""
        if self.encoder == found:
            return
        expected = ("an encoder the file does not name (it was written before feature-scaling files recorded "
                    "their encoder)" if self.encoder is None else f"encoder {self.encoder.describe()}")
        raise ConfigError(f"feature-scaling file {self.file or '(unnamed)'} (the study schema's [study] "
                          f"feature-scaling): its tile-feature constants were computed with {expected}, but the "
                          f"tile features here come from encoder {found.describe()}; recompute the file for this "
                          f"encoder on the reference cohort ({RECOMPUTE_COMMAND}) and name it in the schema, or "
                          "use the encoder the file was computed with")

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> TileScaling:
        """From the schema JSON's form (``center``, ``scale``, ``encoder`` by field names or null, ``file``)."""
        encoder = raw.get("encoder")
        return cls(center=tuple(float(v) for v in raw["center"]), scale=tuple(float(v) for v in raw["scale"]),
                   encoder=None if encoder is None else EncoderIdentity(**encoder), file=str(raw.get("file", "")))


@dataclass(frozen=True)
class FeatureScalingFile:
    """A validated feature-scaling file: the tile features' scaling and each omics layer's, by layer name."""

    wsi: TileScaling | None
    omics: Mapping[str, ColumnScaling]


def read_feature_scaling(path: Path, panels: Mapping[str, Sequence[str]]) -> FeatureScalingFile:
    """Read and check ``path`` against the schema's omics ``panels`` (layer name -> genes, in order).

    ``ConfigError`` naming the file and the key of any problem: not JSON, an unknown key or layer, a gene list that
    is not the layer's panel, vectors of the wrong length, a scale <= 0 or a value that is not finite.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"feature-scaling file {path}: file does not exist") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"feature-scaling file {path}: not readable JSON ({type(exc).__name__}: {exc})") from exc
    where = f"feature-scaling file {path}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a JSON object with keys {sorted(FILE_KEYS)}")
    unknown = sorted(set(raw) - FILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(FILE_KEYS)})")
    wsi = _tile_columns(raw["wsi"], where, Path(path).name) if "wsi" in raw else None
    layers = raw.get("omics", {})
    if not isinstance(layers, dict):
        raise ConfigError(f"{where}: key 'omics' must be an object of omics layers")
    omics = {}
    for name, entry in layers.items():
        key = f"{where}: key 'omics.{name}'"
        if name not in panels:
            raise ConfigError(f"{key}: the schema has no omics layer '{name}' (its layers: {sorted(panels)})")
        scaling = _columns(entry, key, extra=frozenset({"genes"}))
        genes = entry.get("genes")
        if genes is not None and list(genes) != list(panels[name]):
            raise ConfigError(f"{key}: 'genes' is not the layer's panel ({len(genes)} genes against "
                              f"{len(panels[name])}, or in another order)")
        if scaling.width != len(panels[name]):
            raise ConfigError(f"{key}: {scaling.width} columns, but the layer's panel has {len(panels[name])} genes")
        omics[name] = scaling
    return FeatureScalingFile(wsi=wsi, omics=omics)


def _tile_columns(raw: object, where: str, file: str) -> TileScaling:
    """The ``wsi`` entry: its columns and the encoder they were computed with (required)."""
    columns = _columns(raw, f"{where}: key 'wsi'", extra=frozenset({"encoder"}))
    encoder = raw.get("encoder") if isinstance(raw, dict) else None
    if encoder is None:
        raise ConfigError(f"{where}: key 'wsi' does not name the tile encoder its constants were computed with (a "
                          "file written before feature-scaling files recorded it); its constants may belong to "
                          f"another encoder than the study's, so it is refused: recompute it ({RECOMPUTE_COMMAND})")
    if not isinstance(encoder, dict) or set(encoder) != set(ENCODER_KEYS) or not all(
            isinstance(encoder[key], kind) and not isinstance(encoder[key], bool)
            for key, kind in ENCODER_KEYS.items()):
        raise ConfigError(f"{where}: key 'wsi.encoder': must be an object with exactly "
                          f"{', '.join(f'{key!r} ({kind.__name__})' for key, kind in ENCODER_KEYS.items())}")
    try:
        return TileScaling(center=columns.center, scale=columns.scale, encoder=EncoderIdentity.of_file_json(encoder),
                           file=file)
    except ConfigError as exc:
        raise ConfigError(f"{where}: key 'wsi': {str(exc).removeprefix('feature scaling: ')}") from exc


def _columns(raw: object, where: str, extra: frozenset[str] = frozenset()) -> ColumnScaling:
    if not isinstance(raw, dict) or not {"center", "scale"} <= set(raw) or set(raw) - {"center", "scale", *extra}:
        raise ConfigError(f"{where}: must be an object with 'center' and 'scale' lists"
                          + (f" (and optionally {sorted(extra)})" if extra else ""))
    for part in ("center", "scale"):
        values = raw[part]
        if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                   for v in values):
            raise ConfigError(f"{where}.{part}: must be a list of numbers")
    try:
        return ColumnScaling.of(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('feature scaling: ')}") from exc


def feature_scaling_json(reference: str, wsi: tuple[ColumnScaling, EncoderIdentity] | None,
                         omics: Mapping[str, tuple[Sequence[str], ColumnScaling]]) -> str:
    """The file's text (``read_feature_scaling`` reads it back): ``wsi`` is the tile features' scaling and the
    encoder it was computed with, ``omics`` maps a layer to (its panel, scaling)."""
    def columns(scaling: ColumnScaling) -> dict[str, list[float]]:
        return {"center": [float(f"{v:.6g}") for v in scaling.center],
                "scale": [float(f"{v:.6g}") for v in scaling.scale]}
    raw: dict[str, Any] = {"reference": reference}
    if wsi is not None:
        raw["wsi"] = {**columns(wsi[0]), "encoder": wsi[1].to_file_json()}
    raw["omics"] = {name: {"genes": list(genes), **columns(scaling)} for name, (genes, scaling) in omics.items()}
    return json.dumps(raw, indent=1) + "\n"
