"""Frozen encoder weights from a site's safetensors file: the hash check and the tensor check, for any encoder.

The study names the file's sha256 (``safetensors:<architecture>:<sha256>``), so every site provably uses the same
weights; each site points a setting at its local copy. The file must hold exactly the architecture's tensors with
their shapes (no more, no fewer); anything else is a ``ConfigError`` naming the file and the tensor. Used by the
slides' tile encoders (``fedfusion.data.slides.tile_encoder``) and the radiology volume encoder
(``fedfusion.data.radiology.volume_encoder``). Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fedfusion.data.slides.slide_hash_index import file_sha256
from fedfusion.errors import ConfigError

BN_COUNTER = "num_batches_tracked"
"""BatchNorm's training-step counter: optional in a weights file (eval-mode outputs do not depend on it)."""


def checked_encoder_file(name: str, expected: str, encoder_file: Path | None, kind: str, *,
                         what: str = "tile encoder", setting: str = "node config 'encoder-file'") -> Path:
    """The site's encoder file after checking it exists and its sha256 is the one the study names.

    ``what`` names the encoder in messages, ``setting`` the site's option that names its copy of the ``kind`` file.
    """
    if encoder_file is None:
        raise ConfigError(f"the study uses {what} '{name}': set this site's {setting} to its local copy of that "
                          f"{kind} file")
    path = Path(encoder_file)
    if not path.is_file():
        raise ConfigError(f"{what} file {path}: does not exist")
    actual = file_sha256(path)
    if actual != expected.lower():
        raise ConfigError(f"{what} file {path}: sha256 {actual} is not the study's {expected.lower()}; "
                          "every site must use the same encoder file")
    return path


def load_safetensors_weights(module: nn.Module, path: Path, arch: str, what: str = "tile encoder", *,
                             ignored_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``path``'s tensors into ``module`` (architecture ``arch``), refusing a missing, extra or mis-shaped
    tensor with a ``ConfigError`` naming the file and the tensor. Tensors under ``ignored_prefixes`` (a classifier
    head) are left out; BatchNorm counters (``BN_COUNTER``) may be absent."""
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{what} file {path}: not a safetensors file ({exc})") from exc
    tensors = {key: value for key, value in tensors.items() if not key.startswith(ignored_prefixes)}
    expected_shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    missing = sorted(key for key in set(expected_shapes) - set(tensors) if not key.endswith(BN_COUNTER))
    if missing:
        raise ConfigError(f"{what} file {path}: architecture '{arch}' needs tensors it lacks: {missing}")
    unexpected = sorted(set(tensors) - set(expected_shapes))
    if unexpected:
        raise ConfigError(f"{what} file {path}: tensors {unexpected} are not part of architecture '{arch}'")
    for key, shape in expected_shapes.items():
        if key in tensors and tuple(tensors[key].shape) != shape:
            raise ConfigError(f"{what} file {path}: tensor '{key}' has shape {list(tensors[key].shape)}, "
                              f"architecture '{arch}' expects {list(shape)}")
    module.load_state_dict(tensors, strict=False)  # every tensor is checked above; BN counters may be absent
