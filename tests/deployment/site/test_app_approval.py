"""A site's app allow-list: by FAB hash, or by installed fedfusion version for manifest-only apps; the gateway's
path rules. Real FABs built with Flower's own builder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk, build_fab_from_files

import fedfusion
from fedfusion.deployment.coordinator.fleet_gateway import is_public
from fedfusion.deployment.site.app_approval import approve, load_approvals
from fedfusion.errors import AppNotApprovedError, ConfigError
from fedfusion.study.config import StudyConfig
from fedfusion.study.flower_app import write_flower_app
from fedfusion.study.run_config import StudyRun


@pytest.fixture
def study_fab(tmp_path: Path) -> bytes:
    return build_fab_from_disk(write_flower_app(StudyRun.of(StudyConfig(num_server_rounds=2)), tmp_path / "app"))


def test_an_approved_hash_runs_and_any_other_app_is_refused_with_its_hash(study_fab: bytes, tmp_path: Path) -> None:
    allow_list = tmp_path / "approved-apps.txt"
    fab_hash = hashlib.sha256(study_fab).hexdigest()
    assert approve(allow_list, fab_hash, note="study 1")
    assert not approve(allow_list, f"sha256:{fab_hash}")  # already there
    assert load_approvals(allow_list).check("site-a", study_fab) == fab_hash
    other = build_fab_from_disk(write_flower_app(StudyRun.of(StudyConfig(num_server_rounds=3)), tmp_path / "other"))
    other_hash = hashlib.sha256(other).hexdigest()
    with pytest.raises(AppNotApprovedError, match=f"site site-a has not approved app sha256:{other_hash}.*"
                                                  f"fedfusion site approve {other_hash}"):
        load_approvals(allow_list).check("site-a", other)


def test_no_allow_list_approves_nothing(study_fab: bytes, tmp_path: Path) -> None:
    with pytest.raises(AppNotApprovedError):
        load_approvals(tmp_path / "missing.txt").check("site-a", study_fab)


def test_a_fedfusion_version_admits_manifest_only_apps_but_not_apps_shipping_code(study_fab: bytes,
                                                                                  tmp_path: Path) -> None:
    allow_list = tmp_path / "approved-apps.txt"
    approve(allow_list, f"fedfusion=={fedfusion.__version__}")
    approvals = load_approvals(allow_list)
    approvals.check("site-a", study_fab)  # any study config, fedfusion's own code only
    manifest = (write_flower_app(StudyRun.of(StudyConfig()), tmp_path / "shadow") / "pyproject.toml").read_bytes()
    shadowing = build_fab_from_files({"pyproject.toml": manifest,
                                      "fedfusion/site/client_app.py": b"import os  # anything at all\n"})[0]
    shipped = re.escape("ships files besides its manifest: fedfusion/site/client_app.py")
    with pytest.raises(AppNotApprovedError, match=shipped):
        approvals.check("site-a", shadowing)
    foreign = manifest.replace(b"fedfusion.site.client_app:app", b"evil.client:app")
    with pytest.raises(AppNotApprovedError, match="components"):
        approvals.check("site-a", build_fab_from_files({"pyproject.toml": foreign})[0])
    older = manifest.replace(f"fedfusion=={fedfusion.__version__}".encode(), b"fedfusion==0.0.1")
    with pytest.raises(AppNotApprovedError, match="dependencies"):
        approvals.check("site-a", build_fab_from_files({"pyproject.toml": older})[0])


def test_a_malformed_allow_list_names_the_file_and_line(tmp_path: Path) -> None:
    allow_list = tmp_path / "approved-apps.txt"
    allow_list.write_text("# comment\n" + "a" * 64 + "\nnot-a-hash\n")
    with pytest.raises(ConfigError, match=f"{allow_list}, line 3"):
        load_approvals(allow_list)
    with pytest.raises(ConfigError, match="cannot approve"):
        approve(allow_list, "1234")


@pytest.mark.parametrize(("method", "path", "public"), [
    ("POST", "/v1/fleet/pull-messages", True),
    ("POST", "/v1/fleet/activate-node", True),
    ("GET", "/health", True),
    ("POST", "/v1/fleet/register-node", False),
    ("POST", "/v1/fleet/unregister-node", False),
    ("POST", "/v1/control/register-node", False),
    ("POST", "/v1/control/start-run", False),
    ("POST", "/v1/runtime/acquire-task", False),
    ("GET", "/docs", False),
    ("GET", "/v1/fleet/pull-messages", False),
])
def test_the_gateway_serves_only_the_fleet_api(method: str, path: str, public: bool) -> None:
    assert is_public(method, path) is public
