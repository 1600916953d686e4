"""Who may send the gateway a request body: a SuperNode holding an active site key of the registry.

Flower 1.41's SuperNode signs the current time with its private key on every Fleet call (three headers: its public
key, the timestamp, the signature) and the SuperLink checks them only after it has read and parsed the request
body. The gateway checks the same headers first (``fedfusion.flower_compat.fleet_request_signer``, Flower's window
and primitives) and also that the key is the active key of a site in ``registry.json`` (what ``registry_sync.py``
registers at the SuperLink), so the body of anyone else is never read. The SuperLink still checks everything itself,
including that the node id in the body belongs to the key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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


def authenticated_site(headers: Mapping[str, str], keys: SiteKeys) -> str | None:
    """The site a request comes from when its headers carry a valid signed timestamp of an active site key."""
    public_key = fleet_request_signer(headers)
    return None if public_key is None else keys.site_of(public_key)
