"""``fedfusion provision``: a real CA and certificates, site keys, the registry; no mocks."""

from __future__ import annotations

import ipaddress
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedfusion.cli import main
from fedfusion.errors import ConfigError
from fedfusion.provisioning.consortium import add_site, init_consortium, revoke_site, rotate_site
from fedfusion.provisioning.registry import load_registry
from fedfusion.provisioning.site_keys import fingerprint, keygen

SITES = ["site-a", "site-b"]
ADDRESSES = ["127.0.0.1", "coordinator.example.org"]


@pytest.fixture
def consortium(tmp_path: Path) -> Path:
    """A consortium of two sites, made through the command line."""
    path = tmp_path / "consortium"
    argv = ["provision", "init", str(path), "--coordinator-name", "coordinator", "--sites", ",".join(SITES)]
    for address in ADDRESSES:
        argv += ["--coordinator-address", address]
    assert main(argv) == 0
    return path


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _private_key_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]


def test_coordinator_certificate_chains_to_the_ca_with_sans_and_server_usage(consortium: Path) -> None:
    ca = _cert(consortium / "ca" / "ca.crt")
    server = _cert(consortium / "coordinator" / "superlink.crt")
    server.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["coordinator.example.org"]
    usage = server.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key = serialization.load_pem_private_key((consortium / "coordinator" / "superlink.key").read_bytes(), None)
    assert key.public_key() == server.public_key()
    for folder in ["coordinator", *(f"sites/{s}" for s in SITES)]:
        assert (consortium / folder / "ca.crt").read_bytes() == (consortium / "ca" / "ca.crt").read_bytes()


def test_private_keys_are_owner_only_and_stay_with_their_owner(consortium: Path) -> None:
    private = _private_key_files(consortium)
    assert sorted(p.relative_to(consortium).as_posix() for p in private) == [
        "ca/ca.key", "coordinator/superlink.key", "sites/site-a/supernode.key", "sites/site-b/supernode.key"]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for site in SITES:
        bundle = consortium / "sites" / site
        assert _private_key_files(bundle) == [bundle / "supernode.key"]
        assert sorted(p.name for p in bundle.iterdir()) == ["ca.crt", "site.toml", "supernode.key", "supernode.pub"]
    assert not any(p.name.endswith(".partial") for p in consortium.parent.rglob("*"))


def test_openssh_public_key_loads_and_matches_the_private_key(consortium: Path) -> None:
    registry = load_registry(consortium)
    for site in SITES:
        bundle = consortium / "sites" / site
        public = serialization.load_ssh_public_key((bundle / "supernode.pub").read_bytes())
        private = serialization.load_ssh_private_key((bundle / "supernode.key").read_bytes(), None)
        assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP384R1)
        assert private.public_key() == public
        entry = registry.sites[site]
        assert entry.status == "active" and entry.active_key().fingerprint == fingerprint(public)
        toml = (bundle / "site.toml").read_text()
        assert 'superlink = "127.0.0.1:8000"' in toml and f'site-name = "{site}"' in toml
    assert "PRIVATE" not in (consortium / "registry.json").read_text()


def test_rotate_and_revoke_update_the_registry(consortium: Path) -> None:
    old = load_registry(consortium).sites["site-a"].active_key()
    old_private = (consortium / "sites" / "site-a" / "supernode.key").read_bytes()
    assert main(["provision", "rotate", str(consortium), "site-a"]) == 0
    entry = load_registry(consortium).sites["site-a"]
    assert [k.status for k in entry.keys] == ["revoked", "active"]
    assert entry.keys[0].fingerprint == old.fingerprint and entry.keys[0].revoked
    assert entry.keys[1].fingerprint != old.fingerprint
    assert (consortium / "sites" / "site-a" / "supernode.key").read_bytes() != old_private

    assert main(["provision", "revoke", str(consortium), "site-b"]) == 0
    registry = json.loads((consortium / "registry.json").read_text())
    assert registry["sites"]["site-b"]["status"] == "revoked"
    assert [k["status"] for k in registry["sites"]["site-b"]["keys"]] == ["revoked"]
    assert registry["sites"]["site-a"]["status"] == "active"
    with pytest.raises(ConfigError, match=r"site 'site-b' .* is revoked"):
        rotate_site(consortium, "site-b")


def test_add_site_with_only_a_public_key_writes_no_private_key(consortium: Path, tmp_path: Path) -> None:
    own = tmp_path / "site-c-own"
    assert main(["provision", "site-keygen", str(own)]) == 0
    assert stat.S_IMODE((own / "supernode.key").stat().st_mode) == 0o600
    assert main(["provision", "add-site", str(consortium), "site-c", "--public-key", str(own / "supernode.pub")]) == 0
    bundle = consortium / "sites" / "site-c"
    assert sorted(p.name for p in bundle.iterdir()) == ["ca.crt", "site.toml", "supernode.pub"]
    assert (bundle / "supernode.pub").read_text().strip() == (own / "supernode.pub").read_text().strip()
    key = load_registry(consortium).sites["site-c"].active_key()
    assert key.generated_by == "site"
    assert key.fingerprint == fingerprint(serialization.load_ssh_public_key((own / "supernode.pub").read_bytes()))
    with pytest.raises(ConfigError, match="already issued"):
        add_site(consortium, "site-d", own / "supernode.pub")
    with pytest.raises(ConfigError, match="not overwriting a site key"):
        keygen(own)


def test_an_operator_generated_key_rotated_to_the_sites_own_key(consortium: Path, tmp_path: Path) -> None:
    bundle = consortium / "sites" / "site-a"
    assert (bundle / "supernode.key").is_file()  # made by init on the operator's machine
    keygen(tmp_path / "own")
    rotate_site(consortium, "site-a", tmp_path / "own" / "supernode.pub")
    assert not (bundle / "supernode.key").exists()
    assert [k.generated_by for k in load_registry(consortium).sites["site-a"].keys] == ["operator", "site"]


def test_add_site_on_the_coordinator_host_makes_no_private_key_there(consortium: Path, tmp_path: Path) -> None:
    """The coordinator host holds the registry and coordinator/ only (OPERATOR_GUIDE, step 2): no ca/ folder."""
    host = tmp_path / "etc-fedfusion-consortium"
    host.mkdir()
    shutil.copy2(consortium / "registry.json", host / "registry.json")
    shutil.copytree(consortium / "coordinator", host / "coordinator")
    keygen(tmp_path / "site-c-own")  # at the site
    assert main(["provision", "add-site", str(host), "site-c", "--public-key",
                 str(tmp_path / "site-c-own" / "supernode.pub")]) == 0
    bundle = host / "sites" / "site-c"
    assert sorted(p.name for p in bundle.iterdir()) == ["ca.crt", "site.toml", "supernode.pub"]
    assert (bundle / "ca.crt").read_bytes() == (consortium / "ca" / "ca.crt").read_bytes()
    assert _private_key_files(host) == [host / "coordinator" / "superlink.key"]
    assert load_registry(host).sites["site-c"].active_key().generated_by == "site"
    with pytest.raises(SystemExit):  # the site's public key is required
        main(["provision", "add-site", str(host), "site-d"])
    with pytest.raises(ConfigError, match=r"holds no CA key .* site 'site-a' run `fedfusion provision site-keygen"):
        rotate_site(host, "site-a")
    assert _private_key_files(host) == [host / "coordinator" / "superlink.key"]


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        (lambda c, t: init_consortium(c, "x", ["h"], ["s"]), "already exists and is not empty"),
        (lambda c, t: add_site(c, "site-a", t / "missing.pub"), "site 'site-a' already exists in consortium"),
        (lambda c, t: rotate_site(c, "nobody"), "unknown site 'nobody' in consortium"),
        (lambda c, t: revoke_site(c, "nobody"), "unknown site 'nobody'"),
        (lambda c, t: add_site(c, "../evil", t / "missing.pub"), "invalid site name '../evil'"),
        (lambda c, t: add_site(c, "site-z", c / "ca" / "ca.crt"), "not an OpenSSH public key"),
        (lambda c, t: add_site(c, "site-z", t / "missing.pub"), "does not exist"),
        (lambda c, t: add_site(t / "nowhere", "site-z", t / "missing.pub"), "is not a consortium folder"),
        (lambda c, t: init_consortium(t / "new", "x", ["h"], ["a", "a"]), "duplicate site 'a'"),
        (lambda c, t: init_consortium(t / "new", "x", [], ["a"]), "at least one --coordinator-address"),
    ],
)
def test_clear_errors_name_the_folder_or_site(consortium: Path, tmp_path: Path,
                                          action: Callable[[Path, Path], object], fragment: str) -> None:
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match=fragment):
        action(consortium, tmp_path)
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


def test_a_non_nist_key_is_refused(consortium: Path, tmp_path: Path) -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    path = tmp_path / "ed.pub"
    path.write_bytes(public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    with pytest.raises(ConfigError, match="EC on a NIST curve"):
        add_site(consortium, "site-z", path)
    assert not (consortium / "sites" / "site-z").exists()


def test_cli_error_exits_2(consortium: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["provision", "revoke", str(consortium), "nobody"]) == 2
    assert "unknown site 'nobody'" in capsys.readouterr().err
