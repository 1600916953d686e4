"""``sites/<site>/``: the folder handed to one site.

It holds the CA certificate (to verify the coordinator), the site's public key, a ``site.toml`` naming the
coordinator's address and the files, and the site's private key only when the operator generated it. It never
holds the CA key, the coordinator's key or another site's key.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from fedfusion.provisioning.ca import CA_CERT_FILE
from fedfusion.provisioning.key_files import write_public
from fedfusion.provisioning.registry import Registry
from fedfusion.provisioning.site_keys import SITE_PRIVATE_KEY_FILE, SITE_PUBLIC_KEY_FILE, write_key_pair

SITE_TOML_FILE = "site.toml"


def write_site_bundle(site_dir: Path, site: str, registry: Registry, ca_cert_pem: bytes,
                      private_key: ec.EllipticCurvePrivateKey | None, public_key: str, fingerprint: str) -> None:
    """Write (or refresh) a site's bundle; without ``private_key`` the site keeps its own and none is written.

    A private key left from an earlier, now revoked, operator-generated key pair is removed.
    """
    if private_key is not None:
        write_key_pair(private_key, site_dir)
    else:
        (site_dir / SITE_PRIVATE_KEY_FILE).unlink(missing_ok=True)
        write_public(site_dir / SITE_PUBLIC_KEY_FILE, (public_key + "\n").encode("ascii"))
    write_public(site_dir / CA_CERT_FILE, ca_cert_pem)
    write_public(site_dir / SITE_TOML_FILE, site_toml(site, registry, fingerprint,
                                                      own_key=private_key is None).encode("utf-8"))


def site_toml(site: str, registry: Registry, fingerprint: str, own_key: bool) -> str:
    """The site's connection settings; file names are relative to the bundle folder."""
    values = {
        "consortium": registry.consortium,
        "site-name": site,
        "superlink": registry.superlink_address(),
        "root-certificates": CA_CERT_FILE,
        "auth-supernode-private-key": SITE_PRIVATE_KEY_FILE,
        "public-key": SITE_PUBLIC_KEY_FILE,
        "public-key-fingerprint": fingerprint,
    }
    header = f"# fedfusion site bundle: site {site} of consortium {registry.consortium}\n"
    if own_key:
        header += (f"# this site generated its own key pair: keep its private key as {SITE_PRIVATE_KEY_FILE} "
                   "in this folder\n")
    return header + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
