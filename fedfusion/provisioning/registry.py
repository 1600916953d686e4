"""``registry.json``, the operator's record of the coordinator and of every site key ever issued.

For each site: its status (``active`` or ``revoked``) and its keys, newest last, each with the OpenSSH public
key, its SHA-256 fingerprint and its own status. A site has at most one active key. The file is rewritten
atomically; it holds no private key.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.errors import ConfigError

REGISTRY_FILE = "registry.json"
ACTIVE = "active"
REVOKED = "revoked"
FORMAT_VERSION = 1


@dataclass
class SiteKey:
    """One public key issued to (or sent by) a site."""

    fingerprint: str
    public_key: str
    status: str
    created: str
    revoked: str | None = None
    generated_by: str = "operator"
    """``operator`` (the bundle holds the private key) or ``site`` (the site sent only the public key)."""


@dataclass
class RegisteredSite:
    """A site's status and its keys, newest last."""

    status: str
    keys: list[SiteKey] = field(default_factory=list)

    def active_key(self) -> SiteKey | None:
        """The site's active key, if any."""
        return next((key for key in self.keys if key.status == ACTIVE), None)


@dataclass
class Registry:
    """The coordinator's name and addresses, its port, and every site."""

    consortium: str
    coordinator_name: str
    coordinator_addresses: list[str]
    coordinator_port: int
    sites: dict[str, RegisteredSite] = field(default_factory=dict)

    def site(self, name: str, consortium_dir: Path) -> RegisteredSite:
        """The entry of a known site; :class:`ConfigError` naming the site and folder otherwise."""
        if name not in self.sites:
            known = ", ".join(sorted(self.sites)) or "none"
            raise ConfigError(f"unknown site {name!r} in consortium {consortium_dir} (known: {known})")
        return self.sites[name]

    def add_key(self, name: str, public_key: str, fingerprint: str, generated_by: str) -> None:
        """Make ``public_key`` the site's active key, revoking any previous one; the site becomes active."""
        entry = self.sites.setdefault(name, RegisteredSite(status=ACTIVE))
        self.revoke(name)
        entry.keys.append(SiteKey(fingerprint=fingerprint, public_key=public_key, status=ACTIVE, created=_now(),
                                  generated_by=generated_by))
        entry.status = ACTIVE

    def revoke(self, name: str) -> None:
        """Revoke every active key of a site and mark the site revoked."""
        entry = self.sites[name]
        for key in entry.keys:
            if key.status == ACTIVE:
                key.status, key.revoked = REVOKED, _now()
        entry.status = REVOKED

    def superlink_address(self) -> str:
        """``HOST:PORT`` of the coordinator's first address, as a SuperNode dials it."""
        host = self.coordinator_addresses[0]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.coordinator_port}"


def save_registry(registry: Registry, consortium_dir: Path) -> None:
    """Atomically write ``registry.json``."""
    data = {"format": FORMAT_VERSION, **asdict(registry)}
    atomic_write_text(consortium_dir / REGISTRY_FILE, json.dumps(data, indent=2) + "\n")


def load_registry(consortium_dir: Path) -> Registry:
    """Read ``registry.json``; :class:`ConfigError` naming the folder when it is missing or malformed."""
    path = consortium_dir / REGISTRY_FILE
    if not path.is_file():
        raise ConfigError(f"{consortium_dir} is not a consortium folder: {REGISTRY_FILE} is missing "
                          "(create one with `fedfusion provision init`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sites = {name: RegisteredSite(status=entry["status"], keys=[SiteKey(**key) for key in entry["keys"]])
                 for name, entry in data["sites"].items()}
        return Registry(consortium=data["consortium"], coordinator_name=data["coordinator_name"],
                        coordinator_addresses=list(data["coordinator_addresses"]),
                        coordinator_port=int(data["coordinator_port"]), sites=sites)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is malformed: {exc!r}") from exc


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
