"""The feature-cache key of a radiology volume: its content, its mask's content and the study's radiology knobs.

With a CNN encoder the key also holds the encoder's identity: its name (for ``safetensors:cnn3d:<sha256>`` the
weights file's hash), the fixed seed of ``cnn3d`` and the input grid.

Entries live in the site's feature cache beside the slides' (``fedfusion.data.slides.feature_cache``, same atomic
writes and failure entries). A changed file (any slice of a series), mask or knob is a new key, never a stale hit;
the per-feature scaling is not part of the key (it is applied when the features are read).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fedfusion.data.radiology.volume_encoder import CNN3D_SEED
from fedfusion.study.schema import CNN3D, RADIOMICS, RadiologySpec

CACHE_FORMAT = "fedfusion-radiomics/1"
CHUNK_BYTES = 1 << 20


def volume_key(volume: Path, mask: Path | None, spec: RadiologySpec) -> str:
    """Cache key of ``volume`` (a series folder or a file) with ``mask`` under ``spec``'s reading knobs."""
    identity: dict[str, object] = {"format": CACHE_FORMAT, "volume_sha256": content_sha256(volume),
                "mask_sha256": content_sha256(mask) if mask is not None else None, "modality": spec.modality,
                "spacing": list(spec.spacing), "crop": spec.crop, "margin": spec.margin, "window": list(spec.window),
                "features": [f.name for f in spec.features]}
    if spec.encoder != RADIOMICS:  # a radiomics key stays as it was; a CNN's holds its identity and grid
        identity |= {"encoder": spec.encoder, "input_shape": list(spec.input_shape),
                     "seed": CNN3D_SEED if spec.encoder == CNN3D else None}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes, in name order); "" when unreadable."""
    digest = hashlib.sha256()
    path = Path(path)
    try:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()
