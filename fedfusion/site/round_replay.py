"""A site's stored training replies: a round asked again is answered again without training or spending again.

When the coordinator dies after a site answered round r but before it checkpointed round r, the resumed study
asks round r again, with the same global model. The site then sends the update it already computed (and already
charged to its privacy ledger) instead of training again: one release, one charge. The reply is stored at the
site, in its privacy folder, before it can leave::

    <ledger-dir>/round-replies/<dataset key>/<sha256(study id)[:16]>/round-<r>.pt
        {"study_id", "server_round", "received_sha256", "weights", "num_patients", "metrics"}

written atomically and never sent anywhere but as that round's reply. It is replayed only for the same study,
round and received global model (``received_sha256``): a coordinator that sends other weights for the round gets
a freshly trained answer, charged again. Storing round r drops the study's earlier rounds (the coordinator asks
round r only after checkpointing r-1). A round charged but killed before its reply was stored has nothing to
replay: it is trained again and charged again (the ledger never counts less than what may have been released).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fedfusion.atomic_io import atomic_write_bytes
from fedfusion.errors import CorruptReplyError
from fedfusion.privacy.ledger import DatasetId

REPLIES_DIR = "round-replies"


@dataclass(frozen=True)
class StoredReply:
    """A training reply as the site sent it: weights, patients (the FedAvg weight) and metrics."""

    weights: dict[str, torch.Tensor]
    num_patients: int
    metrics: dict[str, float]


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in key order."""
    digest = hashlib.sha256()
    for name, tensor in weights.items():
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{values.dtype}\0{tuple(values.shape)}\0".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes() if values.numel() else b"")
    return digest.hexdigest()


class RoundReplay:
    """The stored replies of one dataset in one study."""

    def __init__(self, ledger_dir: Path, dataset: DatasetId, study_id: str) -> None:
        self.study_id = study_id
        study_key = hashlib.sha256(study_id.encode()).hexdigest()[:16]
        self.directory = Path(ledger_dir) / REPLIES_DIR / dataset.key / study_key
        self.site = dataset.site

    def path(self, server_round: int) -> Path:
        """Where round ``server_round``'s reply is kept."""
        return self.directory / f"round-{server_round}.pt"

    def find(self, server_round: int, received: Mapping[str, torch.Tensor]) -> StoredReply | None:
        """The reply already sent for this round and received model, or None when there is none to replay.

        ``CorruptReplyError`` (naming the file) when the stored reply cannot be read.
        """
        path = self.path(server_round)
        if not path.exists():
            return None
        try:
            stored = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
            matches = (stored["study_id"], stored["server_round"], stored["received_sha256"]) == (
                self.study_id, server_round, weights_digest(received))
            if not matches:
                return None
            return StoredReply(dict(stored["weights"]), int(stored["num_patients"]),
                               {str(k): float(v) for k, v in stored["metrics"].items()})
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, IndexError, TypeError, ValueError,
                RuntimeError) as exc:  # IndexError: torch's weights-only unpickler on some damaged bytes
            raise CorruptReplyError(f"site {self.site}: stored reply", path, f"{type(exc).__name__}: {exc}",
                                    f"refusing to train round {server_round} again without knowing what was sent"
                                    ) from exc

    def store(self, server_round: int, received: Mapping[str, torch.Tensor], reply: StoredReply) -> None:
        """Keep ``reply`` (atomically) before it is sent; drop the replies of this study's earlier rounds."""
        buffer = io.BytesIO()
        torch.save({"study_id": self.study_id, "server_round": server_round,
                    "received_sha256": weights_digest(received), "weights": reply.weights,
                    "num_patients": reply.num_patients, "metrics": reply.metrics}, buffer)
        atomic_write_bytes(self.path(server_round), buffer.getvalue())
        for old in self.directory.glob("round-*.pt"):
            number = old.stem.removeprefix("round-")
            if number.isdigit() and int(number) < server_round:
                old.unlink(missing_ok=True)
