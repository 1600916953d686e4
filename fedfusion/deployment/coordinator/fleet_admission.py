"""Who signed a Fleet request, known before its body is read: a site's active key, another key, or nobody.

Flower 1.41's SuperNode signs the current time with its private key on every Fleet call (three headers: its public
key, the timestamp, the signature) and the SuperLink checks them only after it has read and parsed the request
body. The gateway checks the same headers first (``fedfusion.flower_compat.fleet_request_signer``, Flower's window
and primitives) and looks the key up among the active site keys of ``registry.json`` (what ``registry_sync.py``
registers at the SuperLink), so it can size what it reads by who sent it. The SuperLink still checks everything
itself, including that the node id in the body belongs to the key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedfusion.deployment.coordinator.superlink_control import pem_of
from fedfusion.errors import ConfigError
from fedfusion.flower_compat import fleet_request_signer
from fedfusion.provisioning.registry import REGISTRY_FILE, load_registry

logger = logging.getLogger(__name__)


class SiteKeys:
    """The registry's active site keys (PEM, as a SuperNode sends it) by site name, reread when the file changes."""

    def __init__(self, consortium_dir: Path) -> None:
        self._consortium_dir = consortium_dir
        self._stamp: tuple[int, int] | None = None
        self._sites: dict[bytes, str] = {}
        self._reload()

    def site_of(self, public_key_pem: bytes) -> str | None:
        """The site whose active key this is, or None."""
        self._reload()
        return self._sites.get(public_key_pem)

    def _reload(self) -> None:
        path = self._consortium_dir / REGISTRY_FILE
        try:
            status = path.stat()
        except OSError:
            return  # keep the keys last read; the coordinator's registry sync reports the missing file
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return
        try:
            registry = load_registry(self._consortium_dir)
            self._sites = {pem_of(key.public_key, site): site for site, entry in registry.sites.items()
                           if (key := entry.active_key()) is not None}
        except ConfigError as exc:
            logger.warning("gateway: keeping the site keys read before: %s", exc)
        self._stamp = stamp


@dataclass(frozen=True)
class Signer:
    """Who signed a Fleet request with a valid signature of a current timestamp."""

    site: str | None
    """The site whose active key signed, or None for a key the registry does not hold as active."""


def request_signer(headers: Mapping[str, str], keys: SiteKeys) -> Signer | None:
    """The signer of a request's signed-timestamp headers; None when they are missing or invalid."""
    public_key = fleet_request_signer(headers)
    return None if public_key is None else Signer(keys.site_of(public_key))
