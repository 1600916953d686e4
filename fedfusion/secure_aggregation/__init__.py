"""Secure aggregation (SecAgg+, Bell et al. 2020) as plain classes: the coordinator sees only masked vectors.

`SecAggSite` and `SecAggServer` run the four stages (keys, shares, masked input, unmask) on the data classes of
`messages`; `config.SecAggConfig` sizes the quantization and the modulus. No Flower Message API here: an adapter
maps each stage onto a Message round trip.
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
