"""The operator's actions on a consortium folder: init, add-site, rotate, revoke.

Layout (what goes to whom is in docs/PROVISIONING.md)::

    CONSORTIUM_DIR/
      registry.json                      operator: coordinator address, every site key and its status
      ca/ca.key, ca/ca.crt               operator only; ca.key never leaves this folder
      coordinator/superlink.key, .crt    to the coordinator (SuperLink TLS), with ca.crt
      sites/<site>/                      to one site: supernode.key (if generated here: init, or rotate where
                                         the CA key is), supernode.pub, ca.crt, site.toml
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fedfusion.errors import ConfigError
from fedfusion.provisioning.ca import CA_CERT_FILE, CA_KEY_FILE, create_ca, load_ca_cert_pem, save_ca
from fedfusion.provisioning.certificates import issue_server_certificate
from fedfusion.provisioning.key_files import write_private, write_public
from fedfusion.provisioning.registry import REVOKED, Registry, load_registry, save_registry
from fedfusion.provisioning.site_bundle import write_site_bundle
from fedfusion.provisioning.site_keys import (
    fingerprint,
    generate_site_key,
    openssh_public_key,
    parse_openssh_public_key,
)

CA_DIR = "ca"
COORDINATOR_DIR = "coordinator"
SITES_DIR = "sites"
SUPERLINK_KEY_FILE = "superlink.key"
SUPERLINK_CERT_FILE = "superlink.crt"
DEFAULT_GATEWAY_PORT = 8000
"""The port the sites dial: the coordinator's Fleet gateway (the SuperLink itself listens on loopback only)."""

_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def init_consortium(consortium_dir: Path, coordinator_name: str, coordinator_addresses: Sequence[str],
                    sites: Sequence[str], port: int = DEFAULT_GATEWAY_PORT) -> Registry:
    """Create a consortium folder: CA, coordinator TLS key and certificate, one bundle per site, registry.

    Everything is built in a temporary folder beside ``consortium_dir`` and renamed into place at the end, so
    an interrupted init leaves nothing half-made. An existing non-empty folder is never overwritten.
    """
    if consortium_dir.exists() and (not consortium_dir.is_dir() or any(consortium_dir.iterdir())):
        raise ConfigError(f"{consortium_dir} already exists and is not empty: not overwriting a consortium")
    _check_site_names(sites, consortium_dir)
    consortium_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{consortium_dir.name}.", suffix=".partial", dir=consortium_dir.parent))
    try:
        ca = create_ca(consortium_dir.name)
        save_ca(ca, work / CA_DIR)
        server_key, server_cert = issue_server_certificate(ca, coordinator_name, coordinator_addresses)
        coordinator = work / COORDINATOR_DIR
        write_private(coordinator / SUPERLINK_KEY_FILE, server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        write_public(coordinator / SUPERLINK_CERT_FILE, server_cert.public_bytes(serialization.Encoding.PEM))
        write_public(coordinator / CA_CERT_FILE, ca.cert_pem())
        registry = Registry(consortium=consortium_dir.name, coordinator_name=coordinator_name,
                            coordinator_addresses=list(coordinator_addresses), coordinator_port=port)
        for site in sites:
            _issue_site_key(work, registry, site, public_key_file=None)
        save_registry(registry, work)
        os.rename(work, consortium_dir)  # replaces an empty folder; fails rather than merge into a full one
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return registry


def add_site(consortium_dir: Path, site: str, public_key_file: Path) -> str:
    """Admit a new site with the public key it sent (``fedfusion provision site-keygen`` at the site) and return the
    key's fingerprint; no private key is written. Works on the operator's machine and on the coordinator host."""
    registry = load_registry(consortium_dir)
    _check_site_names([site], consortium_dir)
    if site in registry.sites:
        raise ConfigError(f"site {site!r} already exists in consortium {consortium_dir} "
                          f"(status {registry.sites[site].status}); use `fedfusion provision rotate` for a new key")
    key_fingerprint = _issue_site_key(consortium_dir, registry, site, public_key_file)
    save_registry(registry, consortium_dir)
    return key_fingerprint


def rotate_site(consortium_dir: Path, site: str, public_key_file: Path | None = None) -> str:
    """Give an active site its new public key (or, where the CA key is, a new key pair) and return the new
    fingerprint. The old key is revoked.
    """
    registry = load_registry(consortium_dir)
    if registry.site(site, consortium_dir).status == REVOKED:
        raise ConfigError(f"site {site!r} in consortium {consortium_dir} is revoked: not issuing it a new key")
    key_fingerprint = _issue_site_key(consortium_dir, registry, site, public_key_file)
    save_registry(registry, consortium_dir)
    return key_fingerprint


def revoke_site(consortium_dir: Path, site: str) -> list[str]:
    """Revoke a site and all of its active keys; returns the fingerprints revoked now."""
    registry = load_registry(consortium_dir)
    entry = registry.site(site, consortium_dir)
    active = [key.fingerprint for key in entry.keys if key.status != REVOKED]
    registry.revoke(site)
    save_registry(registry, consortium_dir)
    return active


def site_dir(consortium_dir: Path, site: str) -> Path:
    """The bundle folder of one site."""
    return consortium_dir / SITES_DIR / site


def _issue_site_key(consortium_dir: Path, registry: Registry, site: str, public_key_file: Path | None) -> str:
    if public_key_file is None:
        if not (consortium_dir / CA_DIR / CA_KEY_FILE).is_file():
            raise ConfigError(f"{consortium_dir} holds no CA key (the coordinator host's copy?): a site's private key "
                              f"is not made here; have site {site!r} run `fedfusion provision site-keygen DIR` and "
                              "pass its supernode.pub with --public-key")
        private_key = generate_site_key()
        public_key = private_key.public_key()
    else:
        if not public_key_file.is_file():
            raise ConfigError(f"public key file {public_key_file} for site {site!r} does not exist")
        private_key = None
        public_key = parse_openssh_public_key(public_key_file.read_text(encoding="utf-8", errors="replace"),
                                              f"public key {public_key_file} for site {site!r}")
    public_line, key_fingerprint = openssh_public_key(public_key), fingerprint(public_key)
    if any(key.fingerprint == key_fingerprint for entry in registry.sites.values() for key in entry.keys):
        raise ConfigError(f"public key {key_fingerprint} for site {site!r} was already issued in consortium "
                          f"{consortium_dir}: a site needs a key of its own, never a reused one")
    write_site_bundle(site_dir(consortium_dir, site), site, registry, _ca_cert_pem(consortium_dir),
                      private_key, public_line, key_fingerprint)
    registry.add_key(site, public_line, key_fingerprint, generated_by="operator" if private_key is not None else "site")
    return key_fingerprint


def _ca_cert_pem(consortium_dir: Path) -> bytes:
    """The CA certificate: from ``ca/`` on the operator's machine, from ``coordinator/`` on the coordinator host."""
    copy = consortium_dir / COORDINATOR_DIR / CA_CERT_FILE
    if not (consortium_dir / CA_DIR / CA_CERT_FILE).is_file() and copy.is_file():
        return copy.read_bytes()
    return load_ca_cert_pem(consortium_dir / CA_DIR)


def _check_site_names(sites: Sequence[str], consortium_dir: Path) -> None:
    seen: set[str] = set()
    for site in sites:
        if not _SITE_NAME.fullmatch(site):
            raise ConfigError(f"invalid site name {site!r} for consortium {consortium_dir}: use letters, digits, "
                              "'.', '_' and '-' (at most 64, starting with a letter or digit)")
        if site in seen:
            raise ConfigError(f"duplicate site {site!r} for consortium {consortium_dir}")
        seen.add(site)
