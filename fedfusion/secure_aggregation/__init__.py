"""Secure aggregation (SecAgg+, Bell et al. 2020) as plain classes: the coordinator sees only masked vectors.

`SecAggSite` and `SecAggServer` run the four stages (keys, shares, masked input, unmask) on the data classes of
`messages`, with no Flower Message API; `config.SecAggConfig` sizes the quantization; `crypto` holds the key
agreement and share encryption (on `cryptography`, no Flower internals). The adapters onto Flower's Message API:
`wire_records` (stage data as records), `fedfusion.site.secure_stages` (the ClientApp's side, state in
`context.state`) and `fedfusion.coordinator.secure_stages` (stages 2-4 over the grid, driven by
`strategies.secure_fedavg`).
"""

from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.messages import (
    EncryptedShares,
    MaskedInput,
    PublicKeys,
    SecureAverage,
    UnmaskRequest,
    UnmaskShares,
)
from fedfusion.secure_aggregation.server import SecAggServer
from fedfusion.secure_aggregation.site import SecAggSite

__all__ = [
    "EncryptedShares",
    "MaskedInput",
    "PublicKeys",
    "SecAggConfig",
    "SecAggServer",
    "SecAggSite",
    "SecureAverage",
    "UnmaskRequest",
    "UnmaskShares",
]
