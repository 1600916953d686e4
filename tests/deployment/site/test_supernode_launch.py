"""The site's SuperNode launcher: Flower's own ``flower-supernode`` entry, run after the site's waits are installed."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import pytest

from fedfusion.cli import main as fedfusion_main
from fedfusion.deployment.site import supernode_launch
from fedfusion.deployment.site.supernode_launch import DEFAULT_PULL_INTERVAL_S, launch_command


def test_the_launch_command_runs_flowers_supernode_entry_after_installing_the_waits(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    loop = importlib.import_module("flwr.supernode.start_client_internal")
    monkeypatch.setattr(loop, "time", loop.time)  # all three restored after the test
    monkeypatch.setattr(loop, "pull_objects", loop.pull_objects)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    command = launch_command(0.05, tmp_path / "wake.sock", ["--help"])
    assert command[:3] == [sys.executable, "-m", supernode_launch.__name__]
    with pytest.raises(SystemExit) as ended:
        supernode_launch.main(command[3:])  # what `python -m` runs, in this process
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: flower-supernode") and "--superlink" in out  # Flower's own parser read "--help"
    assert sys.argv == ["flower-supernode", "--help"]
    started = time.monotonic()
    loop.time.sleep(3)  # the loop's wait after an empty pull
    loop.time.sleep(0.5)  # and while a reply is not ready
    assert time.monotonic() - started < 1.0  # Flower's own: 3.5 s


@pytest.mark.parametrize("value", ["0.01", "4", "soon"])
def test_a_pull_interval_out_of_range_is_refused_naming_the_option(value: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--pull-interval", value, "--task-wake-socket", "w", "--", "--help"],
                 ["site", "run", "bundle", "--state-dir", "s", "--data-dir", "d", "--pull-interval", value]):
        with pytest.raises(SystemExit) as refused:
            (supernode_launch.main if argv[0] == "--pull-interval" else fedfusion_main)(argv)
        assert refused.value.code == 2
        assert "argument --pull-interval: --pull-interval must be" in capsys.readouterr().err


def test_the_default_pull_interval_is_shorter_than_flowers_and_within_the_accepted_range() -> None:
    assert supernode_launch.pull_interval(str(DEFAULT_PULL_INTERVAL_S)) == DEFAULT_PULL_INTERVAL_S < 3
