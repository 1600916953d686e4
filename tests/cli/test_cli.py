"""The `fedfusion` command: help for every command, and clear errors before anything starts."""

import subprocess
import sys

import pytest

from fedfusion.cli import main


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "fedfusion.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "simulate", "site"):
        assert command in out.stdout
    simulate = subprocess.run([sys.executable, "-m", "fedfusion.cli", "simulate", "--help"],
                              capture_output=True, text=True, check=True)
    for option in ("--baselines", "--no-dp", "--set", "--rounds", "--sites"):
        assert option in simulate.stdout


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate", "--set", "no-such-knob=1"], "unknown study config keys: ['no-such-knob']"),
        (["simulate", "--set", "num-server-rounds=0"], "'num-server-rounds' must be > 0"),
        (["simulate", "--set", "fusion"], "--set expects KEY=VALUE"),
        (["synth", "--out", "x", "--sites", "2", "--patients", "5"], "patients_per_site must give 2"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
