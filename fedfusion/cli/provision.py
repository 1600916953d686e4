"""``fedfusion provision ...``: create and maintain a consortium's CA, TLS certificate and site keys.

    init          CA, coordinator TLS certificate, one bundle per site, registry.json
    add-site      admit a site with the public key it sent (its private key is made at the site)
    site-keygen   at a site: generate its own key pair, to send only the public key
    rotate        a new key for a site; the old one is revoked
    revoke        revoke a site and its key
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedfusion.provisioning.consortium import (
    DEFAULT_GATEWAY_PORT,
    add_site,
    init_consortium,
    revoke_site,
    rotate_site,
    site_dir,
)
from fedfusion.provisioning.site_keys import SITE_PUBLIC_KEY_FILE, fingerprint, keygen


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``provision`` command and its subcommands."""
    provision = commands.add_parser(
        "provision", help="create a consortium's CA, coordinator certificate and site keys",
        description="Create and maintain a consortium folder: a CA, the coordinator's TLS certificate, each "
                    "site's SuperNode-authentication key and registry.json. See docs/PROVISIONING.md for which "
                    "files go to whom.",
    )
    actions = provision.add_subparsers(title="provision commands", required=True, metavar="PROVISION_COMMAND")

    init = actions.add_parser("init", help="create a consortium folder",
                              description="Create CONSORTIUM_DIR with a CA, the coordinator's TLS key and "
                                          "certificate, one bundle per site and registry.json. Never overwrites.")
    init.add_argument("consortium_dir", type=Path, metavar="CONSORTIUM_DIR")
    init.add_argument("--coordinator-name", required=True, help="the coordinator's name (certificate subject)")
    init.add_argument("--coordinator-address", required=True, action="append", metavar="HOST_OR_IP",
                      help="a host name or IP the sites dial; repeatable; the first goes into site.toml")
    init.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT,
                      help="the port sites dial: the coordinator's Fleet gateway (`fedfusion coordinator run` "
                           "listens on it; the SuperLink itself stays on loopback) (default: %(default)s)")
    init.add_argument("--sites", type=_name_list, default=[], help="site names, comma-separated")
    init.set_defaults(handler=_init)

    add = actions.add_parser("add-site", help="admit a site with the public key it sent",
                             description="Add a site bundle (ca.crt, site.toml, the site's supernode.pub) and its "
                                         "registry entry. The site makes its key pair itself (`fedfusion provision "
                                         "site-keygen`) and sends only supernode.pub: no private key is written "
                                         "here. Works in the operator's consortium folder and in the coordinator "
                                         "host's copy (registry.json and coordinator/).")
    add.add_argument("consortium_dir", type=Path, metavar="CONSORTIUM_DIR")
    add.add_argument("site", metavar="SITE")
    add.add_argument("--public-key", type=Path, required=True, metavar="FILE",
                     help="the site's OpenSSH public key (from `fedfusion provision site-keygen`)")
    add.set_defaults(handler=_add_site)

    site_keygen = actions.add_parser("site-keygen", help="at a site: generate its own key pair",
                                     description="Write an EC P-384 key pair (supernode.key, 0600, and "
                                                 "supernode.pub) into OUT_DIR; send only supernode.pub.")
    site_keygen.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    site_keygen.set_defaults(handler=_site_keygen)

    rotate = actions.add_parser("rotate", help="give a site a new key; the old one is revoked")
    rotate.add_argument("consortium_dir", type=Path, metavar="CONSORTIUM_DIR")
    rotate.add_argument("site", metavar="SITE")
    rotate.add_argument("--public-key", type=Path, default=None, metavar="FILE",
                        help="the site's new OpenSSH public key, when it generated the pair itself (required where "
                             "the CA key is not, e.g. on the coordinator host)")
    rotate.set_defaults(handler=_rotate)

    revoke = actions.add_parser("revoke", help="revoke a site and its key")
    revoke.add_argument("consortium_dir", type=Path, metavar="CONSORTIUM_DIR")
    revoke.add_argument("site", metavar="SITE")
    revoke.set_defaults(handler=_revoke)


def _init(args: argparse.Namespace) -> int:
    registry = init_consortium(args.consortium_dir, args.coordinator_name, args.coordinator_address, args.sites,
                               port=args.port)
    print(f"consortium {args.consortium_dir}: coordinator {registry.superlink_address()}")
    for site, entry in registry.sites.items():
        print(f"  site {site}: {entry.keys[-1].fingerprint}  bundle {site_dir(args.consortium_dir, site)}")
    return 0


def _add_site(args: argparse.Namespace) -> int:
    key_fingerprint = add_site(args.consortium_dir, args.site, args.public_key)
    print(f"site {args.site}: {key_fingerprint}  bundle {site_dir(args.consortium_dir, args.site)}")
    return 0


def _site_keygen(args: argparse.Namespace) -> int:
    public_key = keygen(args.out_dir)
    print(f"key pair in {args.out_dir}: {fingerprint(public_key)}; send only {args.out_dir / SITE_PUBLIC_KEY_FILE}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    key_fingerprint = rotate_site(args.consortium_dir, args.site, args.public_key)
    print(f"site {args.site}: new key {key_fingerprint}; previous key revoked")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    revoked = revoke_site(args.consortium_dir, args.site)
    print(f"site {args.site}: revoked ({', '.join(revoked) or 'no active key'})")
    return 0


def _name_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
